"""Lesson "ffn": the position-wise feed-forward network, the largest part of most transformers.

The worked example runs the library's `MLP` (GELU, GPT-2 style) and `GatedMLP` (SwiGLU, Llama
style) on one token vector under a recorder; the activation table calls the library's activation
functions; parameter shares come from `count_parameters` on published configs.
"""

from __future__ import annotations

import torch

from llm_internals.explain.ffn_counts import (
    MOE_ACTIVE,
    MOE_EXPERTS,
    importance_rows,
    moe_rows,
    share_rows,
)
from llm_internals.explain.ffn_runs import (
    D_FF,
    D_MODEL,
    TRAINED_LAYER,
    TRAINED_TOKENS,
    TRAINED_UNITS,
    moe_example,
    run_layers,
    token,
    top_unit_rows,
    trained_unit_rows,
    unit_contributions,
)
from llm_internals.explain.lesson import Lesson, Section, Step, Table
from llm_internals.explain.registry import LessonInfo
from llm_internals.layers.activations import gelu, gelu_tanh, relu, silu
from llm_internals.models.published import model_config

INFO = LessonInfo(
    name="ffn",
    title="The feed-forward network",
    summary="Expand, activate, contract: the per-token MLP, its activations, and its share of "
    "real models' parameters.",
)

ACTIVATION_INPUTS = [-3.0, -1.0, -0.5, 0.0, 0.5, 1.0, 3.0]


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
