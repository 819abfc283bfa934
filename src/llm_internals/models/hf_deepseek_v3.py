"""DeepSeek-V3 ("deepseek_v3", DeepseekV3ForCausalLM) config.json fields, to and from ModelConfig.

A DeepSeek-V3 decoder is a Llama-style pre-norm stack with two changes, both carried by our one
ModelConfig:

* attention is Multi-head Latent Attention (layers/mla.py): `ModelConfig.mla` holds kv_lora_rank,
  q_lora_rank (null: no query compression), qk_nope_head_dim, qk_rope_head_dim, v_head_dim and
  rope_interleave under their HF names;
* the feed-forward of every layer from `first_k_dense_replace` on is a MoE (layers/moe.py) with
  the "sigmoid_grouped" router: `n_routed_experts` experts of width `moe_intermediate_size`,
  `num_experts_per_tok` chosen among the `topk_group` best of `n_group` groups, weights
  renormalised (`norm_topk_prob`) times `routed_scaling_factor`, plus `n_shared_experts` always-on
  experts. The first layers keep a dense SwiGLU of width `intermediate_size`.

Absent fields take DeepseekV3Config's defaults (the published V3 shapes), as transformers does.
Only what transformers' DeepseekV3 runs is accepted: sigmoid scores with the bias-corrected
top-k ("scoring_func": "sigmoid", "topk_method": "noaux_tc"), no attention biases, the default
RoPE or YaRN (DeepSeek-V3's own `rope_scaling`: stretched rope frequencies, cos/sin times the
attention factor, the softmax scale times mscale^2); anything else is one error naming the field.
Tensor names live in hf_deepseek_v3_tensors.py.
"""

from __future__ import annotations

from typing import Any

from llm_internals.errors import LLMInternalsError
from llm_internals.models.config import ModelConfig
from llm_internals.models.hf_decoder_config import _activation, _field
from llm_internals.models.hf_deepseek_v3_tensors import (
    TensorMap,
    normalize_hf_names,
    tensor_maps,
)

__all__ = ["TensorMap", "config_from_hf", "config_to_hf", "normalize_hf_names", "tensor_maps"]

ARCHITECTURE = "DeepseekV3ForCausalLM"
HINT = "DeepseekV3ForCausalLM in transformers runs only this; fix the field in config.json"

# transformers' DeepseekV3Config defaults, used where config.json leaves a field out.
DEFAULTS: dict[str, Any] = {
    "vocab_size": 129280,
    "hidden_size": 7168,
    "intermediate_size": 18432,
    "moe_intermediate_size": 2048,
    "num_hidden_layers": 61,
    "num_attention_heads": 128,
    "n_shared_experts": 1,
    "n_routed_experts": 256,
    "routed_scaling_factor": 2.5,
    "kv_lora_rank": 512,
    "q_lora_rank": 1536,
    "qk_rope_head_dim": 64,
    "v_head_dim": 128,
    "qk_nope_head_dim": 128,
    "n_group": 8,
    "topk_group": 4,
    "num_experts_per_tok": 8,
    "first_k_dense_replace": 3,
    "norm_topk_prob": True,
    "max_position_embeddings": 4096,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": False,
    "rope_interleave": True,
    "rope_theta": 10000.0,
}


def _get(hf: dict[str, Any], name: str, source: str, kind: type = int) -> Any:
    return _field(hf, name, source, DEFAULTS[name], kind)


def _require(hf: dict[str, Any], name: str, allowed: tuple[Any, ...], source: str) -> None:
    """Refuse a field whose value transformers' DeepseekV3 would silently not honour."""
    value = hf.get(name, allowed[0])
    if value not in allowed:
        raise LLMInternalsError(
            f"{source}: {name} = {value!r} is not supported "
            f"(supported: {', '.join(repr(a) for a in allowed)})",
            hint=HINT,
        )


YARN_FIELDS = ("beta_fast", "beta_slow", "mscale", "mscale_all_dim", "attention_factor")


def _rope_settings(hf: dict[str, Any], source: str) -> tuple[float, dict[str, Any] | None]:
    """rope_theta and rope_scaling from `rope_parameters` (transformers 5) or the top level and
    `rope_scaling` (the published files): the default RoPE or YaRN, anything else refused."""
    params = hf.get("rope_parameters") or {}
    legacy = hf.get("rope_scaling") or {}
    for name, value in (("rope_parameters", params), ("rope_scaling", legacy)):
        if not isinstance(value, dict):
            raise LLMInternalsError(f"{source}: field {name!r} must be an object, got {value!r}")
    merged = {**legacy, **params}
    default = _field(hf, "rope_theta", source, DEFAULTS["rope_theta"], float)
    theta = _field(merged, "rope_theta", f"{source}: rope parameters", default, float)
    field = "rope_parameters" if params else "rope_scaling"
    rope_type = merged.get("rope_type", merged.get("type", "default"))
    if rope_type == "default":
        return theta, None
    if rope_type != "yarn":
        raise LLMInternalsError(
            f"{source}: {field} rope_type = {rope_type!r} is not supported for deepseek_v3",
            hint="supported: default, yarn (DeepSeek-V3's own)",
        )
    where = f"{source}: {field}"
    scaling: dict[str, Any] = {"rope_type": "yarn", "factor": _field(merged, "factor", where,
                                                                     kind=float)}  # fmt: skip
    original = merged.get("original_max_position_embeddings",
                          hf.get("original_max_position_embeddings"))  # fmt: skip
    scaling["original_max_position_embeddings"] = _field(
        {"original_max_position_embeddings": original}, "original_max_position_embeddings", where
    )
    for name in YARN_FIELDS:
        if merged.get(name) is not None:
            scaling[name] = _field(merged, name, where, kind=float)
    if "truncate" in merged:
        scaling["truncate"] = _field(merged, "truncate", where, kind=bool)
    return theta, scaling


def config_from_hf(hf: dict[str, Any], source: str) -> ModelConfig:
    """Our ModelConfig for a deepseek_v3 config.json (already parsed)."""
    if hf.get("model_type") != "deepseek_v3":
        raise LLMInternalsError(f"{source}: model_type {hf.get('model_type')!r} is not deepseek_v3")
    _require(hf, "scoring_func", ("sigmoid",), source)
    _require(hf, "topk_method", ("noaux_tc",), source)
    _require(hf, "attention_bias", (False,), source)
    n_heads = _get(hf, "num_attention_heads", source)
    n_kv = hf.get("num_key_value_heads")
    if n_kv is not None and n_kv != n_heads:  # MLA has one latent, not key/value head groups
        raise LLMInternalsError(
            f"{source}: num_key_value_heads = {n_kv!r} must equal num_attention_heads = "
            f"{n_heads} (Multi-head Latent Attention has no key/value head groups)",
            hint=HINT,
        )
    n_layers = _get(hf, "num_hidden_layers", source)
    n_experts = _get(hf, "n_routed_experts", source)
    top_k = _get(hf, "num_experts_per_tok", source)
    if not 1 <= top_k <= n_experts:
        raise LLMInternalsError(
            f"{source}: num_experts_per_tok = {top_k} must be between 1 and "
            f"n_routed_experts = {n_experts}",
            hint="each token picks num_experts_per_tok of the n_routed_experts experts",
        )
    if _get(hf, "n_shared_experts", source) < 1:  # transformers builds a zero-width one then
        raise LLMInternalsError(
            f"{source}: n_shared_experts = {hf['n_shared_experts']} is not supported "
            "(DeepSeek-V3 has at least one shared expert)",
            hint=HINT,
        )
    first_dense = _get(hf, "first_k_dense_replace", source)
    if first_dense < 0:
        raise LLMInternalsError(f"{source}: first_k_dense_replace = {first_dense} must be >= 0")
    q_lora_rank = hf.get("q_lora_rank", DEFAULTS["q_lora_rank"])  # explicit null: no compression
    if q_lora_rank is not None:
        q_lora_rank = _get(hf, "q_lora_rank", source)
    rope_dim = _get(hf, "qk_rope_head_dim", source)
    if rope_dim % 2:
        raise LLMInternalsError(
            f"{source}: qk_rope_head_dim = {rope_dim} is odd; RoPE rotates pairs of features",
            hint="fix qk_rope_head_dim in config.json",
        )
    activation = _activation(hf.get("hidden_act", "silu"), "hidden_act", source)
    theta, scaling = _rope_settings(hf, source)
    return ModelConfig(
        family="deepseek_v3",
        vocab_size=_get(hf, "vocab_size", source),
        d_model=_get(hf, "hidden_size", source),
        n_layers=n_layers,
        n_heads=n_heads,
        head_dim=rope_dim,  # as transformers: the width the model's RoPE tables are built for
        d_ff=_get(hf, "intermediate_size", source),
        max_seq_len=_get(hf, "max_position_embeddings", source),
        position="rope",
        norm="rmsnorm",
        norm_eps=_get(hf, "rms_norm_eps", source, float),
        ffn="gated",
        activation=activation,
        rope_theta=theta,
        rope_scaling=scaling,
        tie_embeddings=_get(hf, "tie_word_embeddings", source, bool),
        moe={
            "d_expert": _get(hf, "moe_intermediate_size", source),
            "n_experts": n_experts,
            "top_k": top_k,
            "router": "sigmoid_grouped",
            "norm_topk_prob": _get(hf, "norm_topk_prob", source, bool),
            "n_group": _get(hf, "n_group", source),
            "topk_group": _get(hf, "topk_group", source),
            "routed_scaling_factor": _get(hf, "routed_scaling_factor", source, float),
            "n_shared_experts": _get(hf, "n_shared_experts", source),
            "activation": activation,
            "dense_layers": list(range(min(first_dense, n_layers))),
        },
        mla={
            "kv_lora_rank": _get(hf, "kv_lora_rank", source),
            "q_lora_rank": q_lora_rank,
            "qk_nope_head_dim": _get(hf, "qk_nope_head_dim", source),
            "qk_rope_head_dim": rope_dim,
            "v_head_dim": _get(hf, "v_head_dim", source),
            "rope_interleave": _get(hf, "rope_interleave", source, bool),
        },
    )


def check_exportable(config: ModelConfig) -> None:
    """A clear error when a config cannot be written as deepseek_v3."""
    problems = []
    if config.mla is None:
        problems.append("its attention is Multi-head Latent Attention (mla)")
    if config.moe is None:
        pass  # every layer dense: first_k_dense_replace = num_hidden_layers
    elif config.moe.get("router") != "sigmoid_grouped":
        problems.append(f"its router is sigmoid_grouped, not {config.moe.get('router')!r}")
    else:
        dense = config.moe.get("dense_layers", [])
        if dense != list(range(len(dense))):
            problems.append(f"dense layers must be the first ones, got {dense}")
        if config.moe.get("d_shared") or config.moe.get("shared_expert_gate"):
            problems.append("shared experts are n_shared_experts plain experts")
        if not config.moe.get("n_shared_experts"):
            problems.append("it has at least one shared expert (moe.n_shared_experts)")
        if config.moe.get("activation", "silu") != config.activation:
            problems.append("experts and dense layers share one activation (hidden_act)")
    if config.rope_scaling is not None and config.rope_scaling.get("rope_type") != "yarn":
        problems.append("its rope scaling is YaRN or none")
    if config.rope_layout != "half":
        problems.append("its RoPE layout is mla.rope_interleave")
    if config.qkv_bias or config.attn_out_bias or config.mlp_bias or config.qk_norm:
        problems.append("no biases and no q/k norm")
    if config.norm != "rmsnorm" or config.norm_position != "pre" or config.ffn != "gated":
        problems.append("pre-norm RMSNorm with gated FFNs")
    if problems:
        raise LLMInternalsError("cannot export as deepseek_v3: " + "; ".join(problems))


def config_to_hf(config: ModelConfig) -> dict[str, Any]:
    """A deepseek_v3 config.json dict for `config` (loadable by transformers' DeepseekV3Config)."""
    check_exportable(config)
    mla = config.mla
    moe = config.moe or {  # no experts: DeepseekV3Config's MoE fields, no layer using them
        "d_expert": DEFAULTS["moe_intermediate_size"],
        "n_experts": DEFAULTS["n_routed_experts"],
        "top_k": DEFAULTS["num_experts_per_tok"],
        "n_group": DEFAULTS["n_group"],
        "topk_group": DEFAULTS["topk_group"],
        "n_shared_experts": DEFAULTS["n_shared_experts"],
        "dense_layers": list(range(config.n_layers)),
    }
    act = {"gelu": "gelu", "gelu_tanh": "gelu_new", "relu": "relu", "silu": "silu"}
    return {
        "architectures": [ARCHITECTURE],
        "model_type": "deepseek_v3",
        "dtype": "float32",
        "vocab_size": config.vocab_size,
        "hidden_size": config.d_model,
        "intermediate_size": config.d_ff,
        "moe_intermediate_size": moe["d_expert"],
        "num_hidden_layers": config.n_layers,
        "num_attention_heads": config.n_heads,
        "num_key_value_heads": config.n_heads,
        "n_shared_experts": moe.get("n_shared_experts", 0),
        "n_routed_experts": moe["n_experts"],
        "num_experts_per_tok": moe["top_k"],
        "routed_scaling_factor": moe.get("routed_scaling_factor", 1.0),
        "n_group": moe.get("n_group", 1),
        "topk_group": moe.get("topk_group", 1),
        "norm_topk_prob": moe.get("norm_topk_prob", True),
        "first_k_dense_replace": len(moe.get("dense_layers", [])),
        "scoring_func": "sigmoid",
        "topk_method": "noaux_tc",
        "kv_lora_rank": mla["kv_lora_rank"],
        "q_lora_rank": mla.get("q_lora_rank"),
        "qk_nope_head_dim": mla["qk_nope_head_dim"],
        "qk_rope_head_dim": mla["qk_rope_head_dim"],
        "v_head_dim": mla["v_head_dim"],
        "rope_interleave": mla.get("rope_interleave", True),
        "hidden_act": act[config.activation],
        "max_position_embeddings": config.max_seq_len,
        "rms_norm_eps": config.norm_eps,
        "rope_theta": config.rope_theta,
        "rope_parameters": {
            **(config.rope_scaling or {"rope_type": "default"}),
            "rope_theta": config.rope_theta,
        },  # fmt: skip
        "attention_bias": False,
        "tie_word_embeddings": config.tie_embeddings,
        "num_nextn_predict_layers": 0,  # no multi-token-prediction weights are written
    }
