"""Lesson "moe": mixture of experts, from the compute-per-parameter problem to DeepSeek-V3.

Every number comes from the library: the tiny MoELayer and its three routers run on one token
under a recorder (explain/moe_runs.py), a tiny DecoderLM with `moe=...` shows where the layer
sits, torch's FlopCounterMode counts the sorted and dense dispatch, a seeded 40-step run measures
the expert load with no balancing, the auxiliary loss and the bias update, and the published
models' total and active parameters come from their config.json fields (explain/moe_counts.py).
"""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from llm_internals.explain.lesson import Lesson, Section, Step, Table
from llm_internals.explain.moe_counts import MOE_MODELS, expert_width, moe_parameter_counts
from llm_internals.explain.moe_runs import (
    AUX_COEF,
    BATCH,
    D_EXPERT,
    D_MODEL,
    GAMMA,
    N_EXPERTS,
    ROUTER_SETTINGS,
    SELECTION_BIAS,
    STEPS,
    TOP_K,
    BalanceRun,
    moe_layer,
    one_thread_runs,
    one_token,
    with_capacity,
)  # fmt: skip
from llm_internals.explain.registry import LessonInfo
from llm_internals.explain.source import code_block
from llm_internals.explain.tiny_models import tiny_decoder, tiny_tokenizer
from llm_internals.layers.ffn import GatedMLP
from llm_internals.layers.moe_balance import switch_aux_loss, update_selection_bias
from llm_internals.layers.moe_dispatch import expert_capacity
from llm_internals.layers.moe_router import Router, group_limited_topk
from llm_internals.models.published import parameter_counts
from llm_internals.trace import recording

INFO = LessonInfo(
    name="moe",
    title="Mixture of experts",
    summary="Many FFN experts, a router that picks a few per token: parameters without the "
    "compute, the three published routers, load balancing, and what it costs.",
)

TEXT = "the cat sat"
BLOCK_MOE = {"d_expert": 16, "n_experts": 4, "top_k": 2, "dense_layers": [0]}
CAPACITY_FACTORS = (0.5, 1.0, 1.25, 2.0)
DENSE = {"Mistral-7B": "mistral-7b", "Llama-3-70B": "llama-3-70b",
         "Llama-3.1-405B": "llama-3.1-405b"}  # fmt: skip
BAR = "▇"  # one per BAR_PAIRS (token, expert) pairs in the load histogram
BAR_PAIRS = 8


def dense_row(name: str) -> list:
    total = parameter_counts(DENSE[name])["total"]
    lookup = parameter_counts(DENSE[name])["embeddings"]
    return [name, total, total, 100.0, 2 * (total - lookup) / 1e9]


def moe_row(name: str) -> list:
    c = moe_parameter_counts(MOE_MODELS[name])
    lookup = c["embeddings"] // 2  # untied: the head is a matmul, the embedding a lookup
    return [name, c["total"], c["active"], 100 * c["active"] / c["total"],
            2 * (c["active"] - lookup) / 1e9]  # fmt: skip


PARAM_COLUMNS = ["model", "total params", "active params", "active %", "GFLOPs per token"]


def _section_why_needed() -> Section:
    dense, moe = dense_row("Mistral-7B"), moe_row("Mixtral-8x7B")
    return Section(
        "Why MoE was needed",
        [
            Step(
                "In a dense model every weight multiplies every token: a forward pass costs "
                "about 2 FLOPs per parameter per token, so more knowledge (parameters) means "
                "proportionally more compute. Mixtral-8x7B keeps Mistral-7B's attention and "
                f"gives each block 8 FFN experts of which a token uses 2: {moe[1] / dense[1]:.1f} "
                f"times the parameters for {moe[4] / dense[4]:.1f} times the compute.",
                formula="FLOPs per token ~ 2 x (active parameters - embedding lookup)",
                values={"Mistral-7B and Mixtral-8x7B": Table(PARAM_COLUMNS, [dense, moe])},
                decimals=1,
            )
        ],
    )


def _section_expert() -> Section:
    layer = moe_layer()
    expert = layer.experts[0]
    x = one_token()
    with torch.no_grad():
        out = expert(x)
    rows = [["this lesson", D_MODEL, D_EXPERT, sum(p.numel() for p in expert.parameters()),
             N_EXPERTS]]  # fmt: skip
    for name, f in MOE_MODELS.items():
        e = f.get("num_local_experts") or f.get("num_experts") or f["n_routed_experts"]
        rows.append([name, f["hidden_size"], expert_width(f),
                     3 * f["hidden_size"] * expert_width(f), e])  # fmt: skip
    return Section(
        "What an expert really is",
        [
            Step(
                "An expert is nothing new: one SwiGLU FFN (`GatedMLP`, the same class as a "
                "Llama block's FFN), with its own W_gate, W_up and W_down. Experts are not "
                "assigned topics; what each one handles emerges from training.\n\n"
                + code_block(GatedMLP.forward),
                formula="Expert_e(x) = W_down,e (silu(W_gate,e x) * (W_up,e x))",
                values={
                    "x": x[0],
                    "Expert_0(x)": out[0],
                    "experts": Table(
                        [
                            "model",
                            "d_model",
                            "expert width",
                            "params per expert",
                            "experts per layer",
                        ],
                        rows,
                    ),  # fmt: skip
                },
            )
        ],
    )


def routed(router: str, **overrides) -> dict[str, torch.Tensor]:
    """The token through the layer with `router`: what the router recorded and chose (the
    DeepSeek router with SELECTION_BIAS as its bias)."""
    layer = moe_layer(router, **overrides)
    if router == "sigmoid_grouped":
        with torch.no_grad():
            layer.router.e_score_correction_bias.copy_(torch.tensor(SELECTION_BIAS))
    with recording() as rec, torch.no_grad():
        layer(one_token())
    routing = layer.last_routing
    return {"logits": rec.get("router_logits")[0], "indices": routing.indices[0],
            "weights": rec.get("router_weights")[0]}  # fmt: skip


def choice_rows(r: dict[str, torch.Tensor], shown: torch.Tensor) -> list[list]:
    return [[j, int(e), float(shown[e]), float(w)]
            for j, (e, w) in enumerate(zip(r["indices"], r["weights"], strict=True))]  # fmt: skip


def _section_router() -> Section:
    mixtral = routed("topk_softmax")
    logits = mixtral["logits"]
    qwen = routed("softmax_topk")
    qwen_norm = routed("softmax_topk", norm_topk_prob=True)
    deepseek = routed("sigmoid_grouped")
    bias = torch.tensor(SELECTION_BIAS)
    scores = torch.sigmoid(logits)
    settings = ROUTER_SETTINGS["sigmoid_grouped"]
    groups, kept = settings["n_group"], settings["topk_group"]
    biased = scores + bias
    group_scores = biased.view(groups, -1).topk(2, dim=-1).values.sum(-1)
    plain = group_limited_topk(scores[None], TOP_K, 1, 1)[0].tolist()
    no_bias = group_limited_topk(scores[None], TOP_K, groups, kept)[0].tolist()
    per_expert = [[e, e // (N_EXPERTS // groups), float(scores[e]), float(bias[e]),
                   float(biased[e])] for e in range(N_EXPERTS)]  # fmt: skip
    return Section(
        "The router and how it picks",
        [
            Step(
                "The router is one linear map W_g (experts x d_model): a logit per expert for "
                "each token. The three published rules turn the logits into k expert ids and k "
                "combine weights; all three run below on the same token and the same W_g.\n\n"
                + code_block(Router.forward),
                formula="logits = x W_g^T",
                values={"W_g shape": str((N_EXPERTS, D_MODEL)), "logits (recorded)": logits},
            ),
            Step(
                f"topk_softmax (Mixtral): keep the top-{TOP_K} logits, softmax over just "
                "those. The weights always sum to 1.",
                formula="idx = topk(logits, k);  w = softmax(logits[idx])",
                values={
                    "Mixtral choice": Table(
                        ["slot", "expert", "logit", "weight"], choice_rows(mixtral, logits)
                    )
                },  # fmt: skip
            ),
            Step(
                "softmax_topk (Qwen-MoE): softmax over all experts first, then the top-k "
                "probabilities as they are (Qwen1.5/2-MoE, norm_topk_prob = False: the weights "
                "sum to less than 1) or renormalised (Qwen3-MoE, True: the same weights as "
                "Mixtral's rule).",
                formula="p = softmax(logits);  idx = topk(p, k);  w = p[idx] (/ sum p[idx])",
                values={
                    "p": torch.softmax(logits, -1),
                    "Qwen choice, norm_topk_prob False": Table(
                        ["slot", "expert", "p", "weight"],
                        choice_rows(qwen, torch.softmax(logits, -1)),
                    ),
                    "weights, norm_topk_prob True": qwen_norm["weights"],
                },  # fmt: skip
            ),
            Step(
                f"sigmoid_grouped (DeepSeek-V3): s = sigmoid(logits). Selection uses s + b, b "
                f"the per-expert bias of the balancing (here expert 5's was lowered); the "
                f"experts form {groups} groups, a group scores the sum of its 2 best biased "
                f"scores, only the {kept} best groups stay eligible. The weights use the "
                f"*unbiased* s, renormalised, times {settings['routed_scaling_factor']}. Plain "
                f"top-{TOP_K} of s would pick {plain}; groups alone {no_bias}; groups and bias "
                f"{deepseek['indices'].tolist()}.",
                formula="idx = topk over kept groups of (s + b);  w = 2.5 s[idx] / sum s[idx]",
                values={
                    "scores": Table(["expert", "group", "s", "bias b", "s + b"], per_expert),
                    "group scores": group_scores,
                    "DeepSeek choice": Table(
                        ["slot", "expert", "s", "weight"], choice_rows(deepseek, scores)
                    ),  # fmt: skip
                },
            ),
        ],
    )


def block_model():
    """A tiny DecoderLM whose block 0 keeps a dense FFN and block 1 has a MoELayer."""
    return tiny_decoder(0, moe=BLOCK_MOE)


def _section_where_in_block() -> Section:
    model = block_model()
    ids = torch.tensor([tiny_tokenizer().encode(TEXT)])
    with torch.no_grad():
        model(ids)
    rows = [[i, type(b.ffn).__name__, sum(p.numel() for p in b.ffn.parameters())]
            for i, b in enumerate(model.blocks)]  # fmt: skip
    routing = model.blocks[1].ffn.last_routing
    tokens = [[repr(ch), *routing.indices[t].tolist(), *routing.weights[t].tolist()]
              for t, ch in enumerate(TEXT)]  # fmt: skip
    return Section(
        "Where MoE sits in the block",
        [
            Step(
                "MoE replaces the FFN and nothing else: attention, norms and residuals stay. "
                "A tiny DecoderLM built with `moe=` (4 experts, top-2, block 0 kept dense as "
                "DeepSeek's first_k_dense_replace does) on the text below: block 1's FFN is a "
                "MoELayer, and each position picks its own 2 experts.",
                formula="h = h + Attention(Norm(h));   h = h + MoE(Norm(h))",
                values={
                    "blocks": Table(["block", "ffn", "ffn params"], rows),
                    f"block 1 routing of {TEXT!r}": Table(
                        ["token", "expert 1", "expert 2", "weight 1", "weight 2"], tokens
                    ),
                },  # fmt: skip
            )
        ],
    )


def counted_flops(dispatch: str, x: torch.Tensor) -> tuple[int, torch.Tensor]:
    layer = moe_layer(dispatch=dispatch)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        out = layer(x)
    return counter.get_total_flops(), out


def flop_rows(x: torch.Tensor) -> list[list]:
    tokens = x.shape[0]
    router = 2 * tokens * D_MODEL * N_EXPERTS
    expert = 2 * 3 * D_MODEL * D_EXPERT  # per token, three matmuls
    rows = []
    for dispatch, experts_run in (("sorted", TOP_K), ("dense", N_EXPERTS)):
        flops, _ = counted_flops(dispatch, x)
        rows.append([dispatch, experts_run, flops, flops // tokens,
                     router + tokens * experts_run * expert])  # fmt: skip
    return rows


def _section_sparse_compute() -> Section:
    x = torch.randn(BATCH, D_MODEL, generator=torch.Generator().manual_seed(5))
    rows = flop_rows(x)
    same = float((counted_flops("sorted", x)[1] - counted_flops("dense", x)[1]).abs().max())
    mixtral = moe_parameter_counts(MOE_MODELS["Mixtral-8x7B"])
    return Section(
        "Sparse activation and the compute it saves",
        [
            Step(
                f"The default dispatch sorts the {BATCH} x {TOP_K} (token, expert) pairs by "
                "expert and runs each expert once on its own tokens; the dense path runs every "
                "expert on every token and zeroes the unchosen ones. Same output, "
                f"{N_EXPERTS // TOP_K} times the expert FLOPs. torch's FlopCounterMode counted "
                "the real forward passes; the formula column is the router plus 3 matmuls per "
                "expert per token.",
                formula="FLOPs = 2 T d E (router) + T x experts run x 2 x 3 d d_expert",
                values={
                    "FLOPs counted": Table(
                        ["dispatch", "experts per token", "FLOPs", "per token", "formula"], rows
                    ),
                    "max |sorted - dense|": f"{same:.1e}",
                    "Mixtral experts run per token, params": mixtral["experts_active"],
                    "Mixtral experts held, params": mixtral["experts"],
                },  # fmt: skip
            )
        ],
    )


def histogram_rows(runs: dict[str, BalanceRun]) -> list[list]:
    rows = []
    for e in range(N_EXPERTS):
        cells = [int(r.loads[-1][e]) for r in runs.values()]
        rows.append([e, *(f"{c:>3} {BAR * round(c / BAR_PAIRS)}" for c in cells)])
    return rows


def _section_load_balancing(runs: dict[str, BalanceRun]) -> Section:
    summary = [[name, r.variation[0], r.variation[-1], r.aux_losses[0], r.aux_losses[-1]]
               for name, r in (("no balancing", runs["none"]), ("aux loss", runs["aux"]),
                               ("bias update", runs["bias"]))]  # fmt: skip
    return Section(
        "Load balancing",
        [
            Step(
                "Left alone, a router collapses: the experts it picks get the gradient, "
                "improve, and get picked more. The Switch auxiliary loss (added to the "
                "training loss) grows when the experts that get the tokens (f_i) are also "
                "those the router is confident about (P_i); its minimum is k. DeepSeek-V3's "
                "auxiliary-loss-free method instead nudges the selection bias of each expert "
                "after every step.\n\n"
                + code_block(switch_aux_loss)
                + "\n\n"
                + code_block(update_selection_bias),
                formula="L_aux = E sum_i f_i P_i;   b_i <- b_i + gamma sign(mean load - load_i)",
                values={
                    "L_aux of a perfectly even router (k)": float(
                        switch_aux_loss(torch.zeros(4, N_EXPERTS), TOP_K)
                    )
                },  # fmt: skip
            ),
            Step(
                f"A seeded run: a router skewed toward experts 0 and 1, {BATCH} tokens a step, "
                f"{STEPS} Adam steps on the same data with no balancing, with the aux loss "
                f"(coefficient {AUX_COEF}) and with the bias update (gamma {GAMMA}, DeepSeek's "
                "router). "
                "The expert load (token slots per expert) of the last step, and the "
                "coefficient of variation of the load (std / mean, 0 is even). The bias "
                "evens the load without touching the scores, so L_aux, which is computed from "
                "the scores, stays high; the aux loss instead changes the scores themselves.",
                values={
                    "load at the last step": Table(
                        ["expert", "no balancing", "aux loss", "bias update"], histogram_rows(runs)
                    ),
                    "summary": Table(
                        ["method", "CV first step", "CV last step", "L_aux first", "L_aux last"],
                        summary,
                    ),
                    "bias after the run": runs["bias"].layer.router.e_score_correction_bias,
                },  # fmt: skip
                decimals=3,
            ),
        ],
    )


def dropped_rows(runs: dict[str, BalanceRun]) -> list[list]:
    rows = []
    for factor in CAPACITY_FACTORS:
        row = [factor, expert_capacity(factor, BATCH, TOP_K, N_EXPERTS)]
        for run in (runs["none"], runs["aux"]):
            capped = with_capacity(run.layer, factor)
            with torch.no_grad():
                capped(run.batch)
            row += [capped.last_dropped, 100 * capped.last_dropped / (BATCH * TOP_K)]
        rows.append(row)
    return rows


def _section_challenges(runs: dict[str, BalanceRun]) -> Section:
    memory = []
    for name in ("Mixtral-8x7B", "DeepSeek-V3"):
        f, c = MOE_MODELS[name], moe_parameter_counts(MOE_MODELS[name])
        moe_layers = f["num_hidden_layers"] - f.get("first_k_dense_replace", 0)
        a2a = 2 * f["num_experts_per_tok"] * f["hidden_size"] * 2 * moe_layers
        memory.append([name, 2 * c["total"], 2 * c["active"], a2a])
    return Section(
        "Advantages and challenges",
        [
            Step(
                "Memory: every expert must be loaded even though a token uses few, so an MoE "
                "model needs the memory of its total parameters and the bandwidth of its "
                "active ones. Communication: with experts spread over devices (expert "
                "parallelism), each token's hidden vector travels to its k experts and back "
                "in every MoE layer, an all-to-all (bf16, worst case: every expert remote; "
                "DeepSeek-V3 limits a token to 4 nodes).",
                values={
                    "bf16": Table(
                        [
                            "model",
                            "weights bytes",
                            "weights read per token bytes",
                            "all-to-all bytes per token",
                        ],
                        memory,
                    )
                },  # fmt: skip
            ),
            Step(
                "Token dropping: with a capacity C = ceil(factor x T k / E), an expert takes at "
                "most C pairs per batch and the rest are dropped (the token keeps only its "
                "residual). `MoELayer.last_dropped` counted them on a fresh batch for the "
                "unbalanced and the aux-balanced layers of the run above: balancing is what "
                "makes a capacity near 1 affordable.",
                values={
                    "dropped pairs": Table(
                        [
                            "capacity factor",
                            "C",
                            "dropped, unbalanced",
                            "%",
                            "dropped, aux",
                            "% aux",
                        ],
                        dropped_rows(runs),
                    )
                },  # fmt: skip
                decimals=2,
            ),
        ],
    )


def _section_modern_llms() -> Section:
    rows = [moe_row(name) for name in MOE_MODELS]
    rows += [dense_row("Llama-3-70B"), dense_row("Llama-3.1-405B")]
    return Section(
        "Why MoE powers modern LLMs",
        [
            Step(
                "At a fixed training and serving compute, more parameters learn more: the "
                "frontier open models are MoE. DeepSeek-V3 holds more parameters than "
                "Llama-3.1-405B but computes per token less than Llama-3-70B. Counted from "
                "the published config.json shapes (checked against the HF model classes):",
                values={"published models": Table(PARAM_COLUMNS, rows)},
                decimals=1,
            )
        ],
    )


def build() -> Lesson:
    runs = one_thread_runs()
    sections = [
        _section_why_needed(),
        _section_expert(),
        _section_router(),
        _section_where_in_block(),
        _section_sparse_compute(),
        _section_load_balancing(runs),
        _section_challenges(runs),
        _section_modern_llms(),
    ]
    return Lesson(name=INFO.name, title=INFO.title, summary=INFO.summary, sections=sections)
