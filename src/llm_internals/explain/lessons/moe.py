"""Lesson "moe": mixture of experts, from the compute-per-parameter problem to DeepSeek-V3.

Every number comes from the library: the tiny MoELayer and its three routers run on one token
under a recorder (explain/moe_runs.py), a tiny DecoderLM with `moe=...` shows where the layer
sits, torch's FlopCounterMode counts the sorted and dense dispatch, a seeded 40-step run measures
the expert load with no balancing, the auxiliary loss and the bias update, and the published
models' total and active parameters from the table of published shapes (explain/moe_counts.py).
"""

from __future__ import annotations

import torch

from llm_internals.explain import moe_counts, moe_runs
from llm_internals.explain.inputs import LessonInput
from llm_internals.explain.lesson import Lesson, Section, Step, Table
from llm_internals.explain.moe_block import block_routing
from llm_internals.explain.moe_counts import MOE_MODELS, PARAM_COLUMNS, param_row
from llm_internals.explain.moe_runs import BATCH, D_MODEL, N_EXPERTS, TOP_K, BalanceRun, routed
from llm_internals.explain.registry import LessonInfo
from llm_internals.explain.source import code_block
from llm_internals.layers.ffn import GatedMLP
from llm_internals.layers.moe_balance import switch_aux_loss, update_selection_bias
from llm_internals.layers.moe_dispatch import dispatch_sorted
from llm_internals.layers.moe_router import Router, group_limited_topk

INFO = LessonInfo(
    name="moe",
    title="Mixture of experts",
    summary="Many FFN experts, a router that picks a few per token: parameters without the "
    "compute, the three published routers, load balancing, and what it costs.",
)

TEXT = "the cat sat"
INPUTS = (
    LessonInput("aux_coef", "aux loss coefficient", moe_runs.AUX_COEF, kind="float",
                minimum=0.0, maximum=10.0,
                help="weight of the Switch loss in the balancing run (HF Mixtral: 0.001)"),
    LessonInput("gamma", "bias update rate gamma", moe_runs.GAMMA, kind="float", minimum=0.0,
                maximum=1.0, help="step of the selection-bias update (DeepSeek-V3: 0.001)"),
)  # fmt: skip


def _section_why_needed() -> Section:
    dense, moe = param_row("Mistral-7B"), param_row("Mixtral-8x7B")
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
    layer = moe_runs.moe_layer()
    expert = layer.experts[0]
    x = moe_runs.one_token()
    with torch.no_grad():
        out = expert(x)
    params = sum(p.numel() for p in expert.parameters())
    rows = moe_counts.expert_rows(["this lesson", D_MODEL, moe_runs.D_EXPERT, params, N_EXPERTS])
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
                    "experts": Table(moe_counts.EXPERT_COLUMNS, rows),
                },
            )
        ],
    )


def _section_router() -> Section:
    mixtral = routed("topk_softmax")
    logits = mixtral["logits"]
    qwen = routed("softmax_topk")
    qwen_norm = routed("softmax_topk", norm_topk_prob=True)
    deepseek = routed("sigmoid_grouped")
    scores = torch.sigmoid(logits)
    settings = moe_runs.ROUTER_SETTINGS["sigmoid_grouped"]
    groups, kept = settings["n_group"], settings["topk_group"]
    per_expert, group_scores = moe_runs.group_breakdown(scores)
    plain = group_limited_topk(scores[None], TOP_K, 1, 1)[0].tolist()
    no_bias = group_limited_topk(scores[None], TOP_K, groups, kept)[0].tolist()
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
                        ["slot", "expert", "logit", "weight"], moe_runs.choice_rows(mixtral, logits)
                    )
                },
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
                        moe_runs.choice_rows(qwen, torch.softmax(logits, -1)),
                    ),
                    "weights, norm_topk_prob True": qwen_norm["weights"],
                },
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
                        ["slot", "expert", "s", "weight"], moe_runs.choice_rows(deepseek, scores)
                    ),
                },
            ),
        ],
    )


def _section_where_in_block() -> Section:
    rows, tokens = block_routing(TEXT)
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
                },
            )
        ],
    )


def _section_sparse_compute() -> Section:
    x = torch.randn(BATCH, D_MODEL, generator=torch.Generator().manual_seed(5))
    rows, (sorted_out, dense_out) = moe_runs.flop_rows(x)
    same = float((sorted_out - dense_out).abs().max())
    mixtral = moe_counts.counts("Mixtral-8x7B")
    lookup = mixtral["lookup"]
    active, total = (
        moe_counts.forward_flops_per_token(mixtral[k], lookup) for k in ("active", "total")
    )
    return Section(
        "Sparse activation and the compute it saves",
        [
            Step(
                f"The default dispatch sorts the {BATCH} x {TOP_K} (token, expert) pairs by "
                "expert and runs each expert once on its own tokens; the dense path runs every "
                "expert on every token and zeroes the unchosen ones. Same output, "
                f"{N_EXPERTS // TOP_K} times the expert FLOPs. torch's FlopCounterMode counted "
                "the real forward passes; the formula column is the router plus 3 matmuls per "
                "expert per token.\n\n"
                + code_block(dispatch_sorted)
                + "\n\nAt Mixtral's size the same arithmetic (2 FLOPs per weight used) gives "
                "the last two values: what top-2 routing saves per token.",
                formula="FLOPs = 2 T d E (router) + T x experts run x 2 x 3 d d_expert",
                values={
                    "FLOPs counted": Table(
                        ["dispatch", "experts per token", "FLOPs", "per token", "formula"], rows
                    ),
                    "max |sorted - dense|": f"{same:.1e}",
                    "Mixtral experts run per token, params": mixtral["experts_active"],
                    "Mixtral experts held, params": mixtral["experts"],
                    "Mixtral GFLOPs per token, top-2": active / 1e9,
                    "Mixtral GFLOPs per token if all 8 ran": total / 1e9,
                },
            )
        ],
    )


def _section_load_balancing(runs: dict[str, BalanceRun], aux_coef: float, gamma: float) -> Section:
    even = float(switch_aux_loss(torch.zeros(4, N_EXPERTS), TOP_K))
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
                values={"L_aux of a perfectly even router (k)": even},
            ),
            Step(
                f"A seeded run: a router skewed toward experts 0 and 1, {BATCH} tokens a step, "
                f"{moe_runs.STEPS} Adam steps on the same data with no balancing, with the "
                f"aux loss (coefficient {aux_coef:g}) and with the bias update (gamma "
                f"{gamma:g}, DeepSeek's router). The expert load (token slots per "
                "expert) of the last step, and the coefficient of variation of the load "
                "(std / mean, 0 is even). The bias "
                "evens the load without touching the scores, so L_aux, which is computed from "
                "the scores, stays high; the aux loss instead changes the scores themselves.",
                values={
                    "load at the last step": Table(
                        ["expert", "no balancing", "aux loss", "bias update"],
                        moe_runs.histogram_rows(runs),
                    ),
                    "summary": Table(
                        ["method", "CV first step", "CV last step", "L_aux first", "L_aux last"],
                        moe_runs.balance_summary_rows(runs),
                    ),
                    "bias after the run": runs["bias"].layer.router.e_score_correction_bias,
                },
                decimals=3,
            ),
        ],
    )


def _section_challenges(runs: dict[str, BalanceRun]) -> Section:
    memory = moe_counts.memory_rows(("Mixtral-8x7B", "DeepSeek-V3"))
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
                    "bf16": Table(moe_counts.MEMORY_COLUMNS, memory),
                },
            ),
            Step(
                "Token dropping: with a capacity C = ceil(factor x T k / E), an expert takes at "
                "most C pairs per batch and the rest are dropped (the token keeps only its "
                "residual). `MoELayer.last_dropped` counted them on a fresh batch for the "
                "unbalanced and the aux-balanced layers of the run above: balancing is what "
                "makes a capacity near 1 affordable.",
                values={
                    "dropped pairs": Table(moe_runs.DROPPED_COLUMNS, moe_runs.dropped_rows(runs)),
                },
                decimals=2,
            ),
        ],
    )


def _section_modern_llms() -> Section:
    rows = [param_row(name) for name in (*MOE_MODELS, "Llama-3-70B", "Llama-3.1-405B")]
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


def build(aux_coef: float = moe_runs.AUX_COEF, gamma: float = moe_runs.GAMMA) -> Lesson:
    runs = moe_runs.one_thread_runs(aux_coef, gamma)
    sections = [
        _section_why_needed(),
        _section_expert(),
        _section_router(),
        _section_where_in_block(),
        _section_sparse_compute(),
        _section_load_balancing(runs, aux_coef, gamma),
        _section_challenges(runs),
        _section_modern_llms(),
    ]
    return Lesson(name=INFO.name, title=INFO.title, summary=INFO.summary, sections=sections)
