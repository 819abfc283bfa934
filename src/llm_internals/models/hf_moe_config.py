"""HF config.json fields of the mixture-of-experts decoder families, to and from ModelConfig.moe.

Each MoE family shares its attention with a dense family (hf_decoder_config.py reads those
fields) and replaces some or all FFNs with a MoE layer:

| model_type | attention | experts (their width)                 | router        | shared     |
|------------|-----------|---------------------------------------|---------------|------------|
| mixtral    | mistral   | num_local_experts (intermediate_size) | top-k softmax | none       |
| qwen2_moe  | qwen2     | num_experts (moe_intermediate_size)   | softmax top-k | one, gated |
| qwen3_moe  | qwen3     | num_experts (moe_intermediate_size)   | softmax top-k | none       |

Qwen-MoE block i is sparse when i is not in `mlp_only_layers` and (i + 1) % decoder_sparse_step
== 0; the others keep a dense SwiGLU of `intermediate_size` (our `moe.dense_layers`, `d_ff`).
`norm_topk_prob` renormalises the k weights (Qwen2-MoE ships False, Qwen3-MoE True; Mixtral's
rule always sums to 1). Mixtral's `router_jitter_noise` multiplies the router input by
U(1 - eps, 1 + eps) noise in training only (HF skips it in eval mode): inference is unaffected,
our layer never applies it, and it is not written back.
"""

from __future__ import annotations

from typing import Any

from llm_internals.errors import LLMInternalsError
from llm_internals.layers.activations import HF_ACTIVATION_NAMES
from llm_internals.models.config import ModelConfig

MOE_ARCHITECTURES = {
    "mixtral": "MixtralForCausalLM",
    "qwen2_moe": "Qwen2MoeForCausalLM",
    "qwen3_moe": "Qwen3MoeForCausalLM",
}
ATTENTION_FAMILY = {"mixtral": "mistral", "qwen2_moe": "qwen2", "qwen3_moe": "qwen3"}
ROUTERS = {"mixtral": "topk_softmax", "qwen2_moe": "softmax_topk", "qwen3_moe": "softmax_topk"}


def _count(hf: dict[str, Any], name: str, source: str, default: Any = ..., minimum: int = 1) -> int:
    """hf[name] as an integer >= minimum; one error naming the field and value otherwise."""
    if hf.get(name) is None:
        if default is ...:
            raise LLMInternalsError(f"{source}: missing field {name!r}")
        return default
    value = hf[name]
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise LLMInternalsError(
            f"{source}: field {name!r} must be an integer >= {minimum}, got {value!r}"
        )
    return value


def _flag(hf: dict[str, Any], name: str, source: str, default: bool) -> bool:
    value = hf.get(name, default)
    if not isinstance(value, bool):
        raise LLMInternalsError(f"{source}: field {name!r} must be true or false, got {value!r}")
    return value


def _dense_layers(hf: dict[str, Any], n_layers: int, source: str) -> list[int]:
    """Qwen-MoE's dense layers: those in mlp_only_layers plus those decoder_sparse_step skips."""
    step = _count(hf, "decoder_sparse_step", source, 1)
    only = hf.get("mlp_only_layers") or []
    if not isinstance(only, list) or not all(
        isinstance(i, int) and not isinstance(i, bool) and 0 <= i < n_layers for i in only
    ):
        raise LLMInternalsError(
            f"{source}: field 'mlp_only_layers' must list layer indices below "
            f"num_hidden_layers={n_layers}, got {only!r}"
        )
    return [i for i in range(n_layers) if i in only or (i + 1) % step != 0]


def moe_from_hf(hf: dict[str, Any], n_layers: int, source: str) -> tuple[dict[str, Any], int]:
    """ModelConfig.moe for an HF MoE config, and the dense FFN width (`d_ff`).

    Bad routing fields (top-k above the expert count, ...) are reported by MoEConfig.validate
    under their HF names when the ModelConfig is built."""
    family = hf["model_type"]
    if family == "mixtral":
        jitter = hf.get("router_jitter_noise") or 0.0
        if isinstance(jitter, bool) or not isinstance(jitter, (int, float)) or jitter < 0:
            raise LLMInternalsError(
                f"{source}: field 'router_jitter_noise' must be a number >= 0, got {jitter!r}"
            )
        d_expert = _count(hf, "intermediate_size", source)
        moe = {"d_expert": d_expert, "n_experts": _count(hf, "num_local_experts", source)}
        dense_width = d_expert  # every layer is sparse; d_ff is unused
    else:  # qwen2_moe, qwen3_moe (transformers 5.24 writes Qwen3-MoE's count as num_local_experts)
        experts_field = "num_experts" if "num_experts" in hf else "num_local_experts"
        moe = {
            "d_expert": _count(hf, "moe_intermediate_size", source),
            "n_experts": _count(hf, experts_field, source),
            "norm_topk_prob": _flag(hf, "norm_topk_prob", source, False),
            "dense_layers": _dense_layers(hf, n_layers, source),
        }
        dense_width = _count(hf, "intermediate_size", source)
        if family == "qwen2_moe":
            moe["d_shared"] = _count(hf, "shared_expert_intermediate_size", source)
            moe["shared_expert_gate"] = True
    moe["top_k"] = _count(hf, "num_experts_per_tok", source)
    if moe["top_k"] > moe["n_experts"]:
        experts_field = "num_local_experts" if family == "mixtral" else experts_field
        raise LLMInternalsError(
            f"{source}: num_experts_per_tok = {moe['top_k']} is larger than "
            f"{experts_field} = {moe['n_experts']}",
            hint="a token cannot pick more experts than the layer has",
        )
    moe["router"] = ROUTERS[family]
    # the experts use hidden_act too (an unknown name is reported with the dense fields)
    act = hf.get("hidden_act", "silu")
    moe["activation"] = HF_ACTIVATION_NAMES.get(act, "silu") if isinstance(act, str) else "silu"
    return moe, dense_width


def moe_to_hf(config: ModelConfig, family: str) -> dict[str, Any]:
    """The HF MoE fields of `config` (already checked by `moe_export_problems`)."""
    moe = config.moe
    if family == "mixtral":
        return {
            "intermediate_size": moe["d_expert"],
            "num_local_experts": moe["n_experts"],
            "num_experts_per_tok": moe["top_k"],
            "router_jitter_noise": 0.0,
        }
    out = {
        "intermediate_size": config.d_ff,
        "moe_intermediate_size": moe["d_expert"],
        "num_experts": moe["n_experts"],
        "num_experts_per_tok": moe["top_k"],
        "norm_topk_prob": moe.get("norm_topk_prob", True),
        "decoder_sparse_step": 1,
        "mlp_only_layers": sorted(moe.get("dense_layers", [])),
    }
    if family == "qwen2_moe":
        out["shared_expert_intermediate_size"] = moe["d_shared"]
    return out


def infer_moe_family(config: ModelConfig) -> str:
    """The HF MoE family a custom config with experts is closest to (by its router)."""
    if config.moe.get("router", "topk_softmax") == "topk_softmax":
        return "mixtral"
    return "qwen2_moe" if config.moe.get("shared_expert_gate") else "qwen3_moe"


def moe_export_problems(config: ModelConfig, family: str) -> list[str]:
    """Why `config` cannot be written as the HF family `family` (empty when it can)."""
    moe = config.moe
    if moe is None:
        return [f"{family} needs experts (moe is null)"] if family in MOE_ARCHITECTURES else []
    if family not in MOE_ARCHITECTURES:
        return [f"{family} has no experts; a model with moe exports as one of "
                f"{', '.join(MOE_ARCHITECTURES)}"]  # fmt: skip
    problems = []
    if moe.get("router", "topk_softmax") != ROUTERS[family]:
        problems.append(f"{family} routes with {ROUTERS[family]}, not {moe.get('router')}")
    if moe.get("n_group", 1) != 1 or moe.get("routed_scaling_factor", 1.0) != 1.0:
        problems.append(f"{family} has no group-limited routing or routed scaling")
    if moe.get("capacity_factor") is not None:
        problems.append(f"{family} drops no tokens (capacity_factor must be null)")
    if moe.get("activation", "silu") != config.activation:
        problems.append(f"{family} experts use hidden_act, the activation of the dense FFNs")
    if config.mlp_bias:
        problems.append(f"{family} FFNs have no biases")
    shared = (moe.get("n_shared_experts", 0), moe.get("d_shared"), moe.get("shared_expert_gate"))
    if family == "qwen2_moe":
        if not (shared[0] == 0 and shared[1] and shared[2]):
            problems.append("qwen2_moe has one sigmoid-gated shared expert of width d_shared")
    elif any(shared):
        problems.append(f"{family} has no shared experts")
    if family == "mixtral" and moe.get("dense_layers"):
        problems.append("every Mixtral layer is sparse (dense_layers must be empty)")
    return problems
