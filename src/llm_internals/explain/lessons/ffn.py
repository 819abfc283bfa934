"""Lesson "ffn": the position-wise feed-forward network, the largest part of most transformers.

The worked example runs the library's `MLP` (GELU, GPT-2 style) and `GatedMLP` (SwiGLU, Llama
style) on one token vector under a recorder; the activation table calls the library's activation
functions; parameter shares come from `count_parameters` on published configs.
"""

from __future__ import annotations

import torch

from llm_internals.explain.lesson import Lesson, Section, Step, Table
from llm_internals.explain.lesson_model import load_lesson_model
from llm_internals.explain.registry import LessonInfo
from llm_internals.explain.tiny_models import tiny_decoder
from llm_internals.layers.activations import gelu, gelu_tanh, relu, silu
from llm_internals.layers.ffn import MLP, GatedMLP
from llm_internals.layers.moe import MoEConfig, MoELayer
from llm_internals.models.params import count_model_parameters
from llm_internals.models.published import model_config, parameter_counts
from llm_internals.trace import recording

INFO = LessonInfo(
    name="ffn",
    title="The feed-forward network",
    summary="Expand, activate, contract: the per-token MLP, its activations, and its share of "
    "real models' parameters.",
)

D_MODEL = 4
D_FF = 16
SEED = 0
ACTIVATION_INPUTS = [-3.0, -1.0, -0.5, 0.0, 0.5, 1.0, 3.0]
TOP_UNITS = 4  # hidden units shown in "what it learns"
IMPORTANCE_MODEL = "llama-3-8b"
MOE_EXPERTS, MOE_ACTIVE = 8, 2  # Mixtral-8x7B: Mistral-7B's shape with 8 experts, top-2 routing


def token() -> torch.Tensor:
    return torch.tensor([[0.5, -1.0, 0.25, 2.0]])


def make_layers() -> tuple[MLP, GatedMLP]:
    torch.manual_seed(SEED)
    return MLP(D_MODEL, D_FF, activation="gelu"), GatedMLP(D_MODEL, D_FF, activation="silu")


def run_layers() -> tuple[MLP, GatedMLP, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    mlp, gated = make_layers()
    names = ("ffn_up", "ffn_activated", "ffn_output")
    with torch.no_grad():
        with recording() as rec:
            mlp(token())
        plain = {name: rec.get(name)[0] for name in names}
        with recording() as rec:
            gated(token())
        swiglu = {name: rec.get(name)[0] for name in (*names, "ffn_gate")}
    return mlp, gated, plain, swiglu


def models() -> dict[str, dict[str, int]]:
    """Parameter counts by component of published configs."""
    counts = {"BERT-base": parameter_counts("bert-base")}
    for name, model in (("GPT-2 (124M)", "gpt2-124m"), ("SmolLM-135M", "smollm-135m"),
                        ("Qwen3-0.6B", "qwen3-0.6b"), ("Llama-3-8B", "llama-3-8b"),
                        ("Llama-3-70B", "llama-3-70b")):  # fmt: skip
        counts[name] = parameter_counts(model)
    return counts


def share_rows() -> list[list]:
    rows = []
    for name, c in models().items():
        non_embedding = c["total"] - c["embeddings"] - c["lm_head"]
        rows.append([name, c["ffn"], c["total"], 100 * c["ffn"] / c["total"],
                     100 * c["ffn"] / non_embedding])  # fmt: skip
    return rows


def moe_rows() -> list[list]:
    dense = parameter_counts("mistral-7b")
    experts = MOE_EXPERTS * dense["ffn"]
    total = dense["total"] - dense["ffn"] + experts
    active = dense["total"] - dense["ffn"] + MOE_ACTIVE * dense["ffn"]
    return [["Mistral-7B (dense)", dense["ffn"], dense["total"], dense["total"]],
            [f"{MOE_EXPERTS} experts, top-{MOE_ACTIVE}", experts, total, active]]  # fmt: skip


def _section_what_it_is() -> Section:
    return Section(
        "What it is",
        [
            Step(
                "A two-layer network applied to every token vector separately: project up to "
                "a wider hidden size d_ff, apply a nonlinearity, project back. Attention "
                "moves information between positions; the FFN transforms it within each "
                "position, and is where much of a model's stored knowledge lives.",
                formula="FFN(x) = W_down act(W_up x + b_up) + b_down",
            )
        ],
    )


def _section_analogy(plain) -> Section:
    firing = int((plain["ffn_activated"] > 0).sum())
    return Section(
        "An analogy",
        [
            Step(
                "Think of the FFN as a large set of pattern detectors, each with a note "
                "attached. Every hidden unit compares the token vector with its pattern (a row "
                "of W_up); the activation lets through only the units whose pattern matches "
                "well; each unit that fires adds its note (a column of W_down) to the token, "
                "in proportion to how strongly it fired. Attention is the meeting where tokens "
                "exchange information; the FFN is each token thinking it over on its own.",
                values={
                    "pattern detectors (d_ff hidden units)": D_FF,
                    "firing (GELU output > 0) for the example token": firing,
                },
            )
        ],
    )


def unit_contributions(mlp: MLP, plain: dict[str, torch.Tensor]) -> torch.Tensor:
    """Column i of W_down times unit i's activation: (D_FF, D_MODEL); their sum plus b_down is
    the FFN's output."""
    return plain["ffn_activated"][:, None] * mlp.down_proj.weight.detach().T


def top_unit_rows(mlp: MLP, plain: dict[str, torch.Tensor]) -> list[list]:
    contributions = unit_contributions(mlp, plain)
    order = plain["ffn_activated"].abs().argsort(descending=True)[:TOP_UNITS]
    return [[int(i), float(plain["ffn_up"][i]), float(plain["ffn_activated"][i]),
             float(contributions[i].norm())] for i in order]  # fmt: skip


TRAINED_TEXT = (
    "Now is the winter of our discontent\nMade glorious summer by this sun of York;\n"
    "And all the clouds that lour'd upon our house\nIn the deep bosom of the ocean buried.\n"
)
TRAINED_LAYER, TRAINED_UNITS, TRAINED_TOKENS = 1, 3, 4  # layer 2; its 3 strongest units


def trained_unit_rows() -> list[list]:
    """For the TRAINED_UNITS units of the trained model's layer TRAINED_LAYER FFN with the
    largest activation anywhere in TRAINED_TEXT: the tokens (with the two before them) where
    each fires most, and the activation act(gate) * up there."""
    model, tokenizer = load_lesson_model()
    ids = tokenizer.encode_ordinary(TRAINED_TEXT)
    with recording() as rec, torch.no_grad():
        model(torch.tensor([ids]))
    acts = rec.all("ffn_activated")[TRAINED_LAYER][0]  # (tokens, d_ff)
    units = acts.max(dim=0).values.argsort(descending=True)[:TRAINED_UNITS]
    rows = []
    for unit in units.tolist():
        for position in acts[:, unit].argsort(descending=True)[:TRAINED_TOKENS].tolist():
            before = tokenizer.decode(ids[max(position - 2, 0) : position])
            shown = f"{before}[{tokenizer.decode([ids[position]])}]".replace("\n", "\\n")
            rows.append([unit, shown, float(acts[position, unit])])
    return rows


def _section_what_it_learns(mlp, plain) -> Section:
    contributions = unit_contributions(mlp, plain)
    return Section(
        "What it learns",
        [
            Step(
                "Read W_up's rows as keys and W_down's columns as values: the FFN is a "
                "key-value memory (Geva et al., 2021). Training shapes the keys into "
                "detectors of input patterns (in trained models, e.g. 'a year in the 1900s' "
                "or 'the word after \"New\"') and the values into what should be added to "
                "the residual stream when the pattern is present, often a push towards the "
                "likely next tokens. The output is exactly the sum of the values weighted by "
                "the activations; here the units of the example token that fire most "
                "(random weights, so the patterns mean nothing yet):",
                formula="FFN(x) = sum_i act(k_i . x + b_i) v_i + b_down",
                values={
                    "strongest units": Table(
                        ["unit i", "k_i . x + b_i", "activation", "|activation v_i|"],
                        top_unit_rows(mlp, plain),
                    ),
                    "sum_i act_i v_i + b_down": contributions.sum(0) + mlp.down_proj.bias.detach(),
                    "FFN output (recorded)": plain["ffn_output"],
                },
            ),
            Step(
                "In a trained model the keys mean something. The lessons' small model "
                "(trained on Shakespeare, SwiGLU FFN of 352 units per layer) reads four lines of "
                f"Richard III; for the {TRAINED_UNITS} units of layer {TRAINED_LAYER + 1} that "
                f"fire hardest, the {TRAINED_TOKENS} tokens (in brackets, after the two before "
                "them) where each fires most: a unit responds to a family of contexts, not to "
                "one position.",
                formula="act_i = silu(gate_i . x) * (up_i . x)",
                values={
                    "strongest units of the trained model": Table(
                        ["unit", "token in context", "activation"], trained_unit_rows()
                    ),
                },
                decimals=3,
            ),
        ],
    )


def importance_rows() -> list[list]:
    """FFN vs attention parameters in the lesson's tiny decoder and a published model."""
    rows = []
    for name, counts in (
        ("tiny decoder (this course)", count_model_parameters(tiny_decoder())),
        (IMPORTANCE_MODEL, parameter_counts(IMPORTANCE_MODEL)),
    ):
        rows.append([name, counts["ffn"], counts["attention"], counts["ffn"] / counts["attention"],
                     100 * counts["ffn"] / counts["total"]])  # fmt: skip
    return rows


def _section_why_important() -> Section:
    return Section(
        "Why it is important",
        [
            Step(
                "Attention decides which tokens to read from; the FFN does most of the "
                "computing on what was read, and holds most of the weights: in every block "
                "the FFN has more parameters than attention (with GQA's shared K/V heads, "
                "over four times more in Llama 3), so it also takes most of the "
                "multiply-adds per token and most of what a model memorizes. Removing or "
                "editing single FFN units changes specific facts a model recalls, which is "
                "why model-editing methods (ROME, MEMIT) target the FFN.",
                values={
                    "FFN vs attention": Table(
                        [
                            "model",
                            "ffn params",
                            "attention params",
                            "ffn / attention",
                            "ffn % of total",
                        ],
                        importance_rows(),
                    )  # fmt: skip
                },
                decimals=2,
            )
        ],
    )


def _section_where_sits() -> Section:
    return Section(
        "Where it sits",
        [
            Step(
                "Second half of every block, after attention, with its own norm and residual "
                "connection. The same weights are used at every position (hence "
                "'position-wise').",
                formula="h = h + Attention(Norm(h));   h = h + FFN(Norm(h))",
            )
        ],
    )


def _section_step_by_step(plain, swiglu) -> Section:
    return Section(
        "Step by step",
        [
            Step(
                f"One token vector (d_model = {D_MODEL}) through the library's MLP with GELU "
                f"(d_ff = {D_FF}, random weights).",
                values={
                    "x": token()[0],
                    "W_up x + b_up": plain["ffn_up"],
                    "GELU(...)": plain["ffn_activated"],
                    "W_down (...) + b_down": plain["ffn_output"],
                },
            ),
            Step(
                "Llama's SwiGLU uses three matrices: a gate passed through SiLU multiplies, "
                "feature by feature, a second up-projection, then W_down contracts.",
                formula="SwiGLU(x) = W_down (silu(W_gate x) * (W_up x))",
                values={
                    "silu(W_gate x)": swiglu["ffn_gate"],
                    "W_up x": swiglu["ffn_up"],
                    "gate * up": swiglu["ffn_activated"],
                    "output": swiglu["ffn_output"],
                },
            ),
        ],
    )


def _section_expand_then_contract(plain) -> Section:
    real_shapes = [
        [name, c.d_model, c.d_ff, c.d_ff / c.d_model, c.ffn, c.activation]
        for name, c in (
            ("GPT-2 (124M)", model_config("gpt2-124m")),
            ("Llama-3-8B", model_config("llama-3-8b")),
            ("Llama-3-70B", model_config("llama-3-70b")),
        )  # fmt: skip
    ]
    return Section(
        "Expand then contract",
        [
            Step(
                "The hidden layer is wider than the model: 4x in GPT-2 and BERT. SwiGLU has "
                "three matrices, so the original recipe shrank d_ff to 8/3 x to keep two 4x "
                "matrices' worth of parameters; Llama 3 uses 3.5x. The wide layer gives room "
                "for many feature detectors; contracting brings the result back to the "
                "residual stream's width.",
                values={
                    "shapes here": f"x {tuple(token().shape)} -> "
                    f"{tuple(plain['ffn_up'][None].shape)} -> "
                    f"{tuple(plain['ffn_output'][None].shape)}",
                    "real models": Table(
                        ["model", "d_model", "d_ff", "d_ff / d_model", "kind", "activation"],
                        real_shapes,
                    ),
                },
                decimals=3,
            )
        ],
    )


def _section_activations() -> Section:
    x = torch.tensor(ACTIVATION_INPUTS)
    activation_rows = [
        [v, r, g, t, s]
        for v, r, g, t, s in zip(
            x.tolist(),
            relu(x).tolist(),
            gelu(x).tolist(),
            gelu_tanh(x).tolist(),
            silu(x).tolist(),
            strict=True,
        )  # fmt: skip
    ]
    return Section(
        "Activations",
        [
            Step(
                "ReLU (original Transformer) zeroes negatives. GELU (BERT; GPT-2 uses its tanh "
                "approximation) is a smooth ReLU that lets small negatives through. SiLU "
                "(x * sigmoid(x)) is the gate of SwiGLU.",
                values={
                    "library activations": Table(
                        ["x", "relu", "gelu", "gelu_tanh", "silu"], activation_rows
                    )
                },
            )
        ],
    )


def _section_share_parameters() -> Section:
    return Section(
        "Share of the parameters",
        [
            Step(
                "Counted from the published configs: the FFNs hold two thirds or more of the "
                "parameters outside the embeddings, and most of a large model's weights.",
                values={
                    "FFN parameters": Table(
                        ["model", "ffn", "total", "% of total", "% of non-embedding"],
                        share_rows(),
                    )
                },
                decimals=1,
            )
        ],
    )


def moe_example() -> tuple[MoELayer, dict[str, torch.Tensor]]:
    """The example token through the library's MoELayer: MOE_EXPERTS SwiGLU experts of width
    D_FF, Mixtral's router (top-MOE_ACTIVE logits, softmax over them)."""
    torch.manual_seed(SEED)
    layer = MoELayer(MoEConfig(D_MODEL, D_FF, MOE_EXPERTS, MOE_ACTIVE, router="topk_softmax"))
    with recording() as rec, torch.no_grad():
        out = layer(token())
    return layer, {"logits": rec.get("router_logits")[0], "weights": rec.get("router_weights")[0],
                   "indices": layer.last_routing.indices[0], "output": out[0]}  # fmt: skip


def _section_ffns_mixture_experts() -> Section:
    layer, moe = moe_example()
    with torch.no_grad():
        expert_outputs = [layer.experts[int(e)](token())[0] for e in moe["indices"]]
    chosen = [[j, int(e), float(w)] for j, (e, w) in enumerate(zip(moe["indices"], moe["weights"],
                                                                    strict=True))]  # fmt: skip
    return Section(
        "FFNs in mixture-of-experts models",
        [
            Step(
                f"The library's MoELayer on the example token: {MOE_EXPERTS} SwiGLU experts "
                f"(each the FFN above, d_ff = {D_FF}) and a router, one linear map W_g, that "
                f"scores every expert. Mixtral's rule keeps the top {MOE_ACTIVE} logits and "
                "softmaxes over them; the output is the weighted sum of just those experts' "
                "outputs, so the other experts cost nothing for this token.",
                formula="y = sum_j w_j Expert_idx_j(x),  idx = topk(x W_g^T),  "
                "w = softmax(logits[idx])",
                values={
                    "router logits x W_g^T": moe["logits"],
                    "chosen experts": Table(["slot", "expert", "weight w_j"], chosen),
                    "sum_j w_j Expert_j(x)": sum(
                        w * out for w, out in zip(moe["weights"], expert_outputs, strict=True)
                    ),
                    "MoE layer output": moe["output"],
                },
            ),
            Step(
                "Mixture-of-experts models (Mixtral, DeepSeek, Qwen-MoE) replace the one FFN "
                "with several 'expert' FFNs and a router that sends each token to a few of "
                f"them. Mixtral-8x7B is Mistral-7B's shape with {MOE_EXPERTS} experts and "
                f"top-{MOE_ACTIVE} routing: far more parameters, about the same compute "
                "per token as a 13B dense model (the router's 1M weights are left out).",
                values={
                    "parameters": Table(
                        ["model", "ffn (all experts)", "total", "active per token"],
                        moe_rows(),
                    )
                },
            ),
        ],
    )


def build() -> Lesson:
    mlp, gated, plain, swiglu = run_layers()
    sections = [
        _section_what_it_is(),
        _section_analogy(plain),
        _section_where_sits(),
        _section_step_by_step(plain, swiglu),
        _section_expand_then_contract(plain),
        _section_what_it_learns(mlp, plain),
        _section_activations(),
        _section_share_parameters(),
        _section_why_important(),
        _section_ffns_mixture_experts(),
    ]
    return Lesson(name=INFO.name, title=INFO.title, summary=INFO.summary, sections=sections)
