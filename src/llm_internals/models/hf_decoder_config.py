"""HF config.json fields of the decoder families, to and from our ModelConfig.

GPT-2 ("gpt2") uses n_embd/n_layer/n_head; Llama, Mistral, Qwen2 and Qwen3 use hidden_size/
num_hidden_layers/num_attention_heads/num_key_value_heads. Qwen2 has biases on q/k/v only;
Qwen3 adds RMS q_norm/k_norm over each head; Mistral adds a sliding window. RoPE settings come
from `rope_parameters` (transformers 5) or `rope_theta` + `rope_scaling` (transformers 4).
"""

from __future__ import annotations

import math
from typing import Any

from llm_internals.errors import LLMInternalsError
from llm_internals.layers.activations import HF_ACTIVATION_NAMES
from llm_internals.models.config import ModelConfig
from llm_internals.models.hf_moe_config import (
    ATTENTION_FAMILY,
    MOE_ARCHITECTURES,
    infer_moe_family,
    moe_export_problems,
    moe_from_hf,
    moe_to_hf,
)

LLAMA_LIKE = ("llama", "mistral", "qwen2", "qwen3", *MOE_ARCHITECTURES)
ARCHITECTURES = {
    "gpt2": "GPT2LMHeadModel",
    "llama": "LlamaForCausalLM",
    "mistral": "MistralForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
    **MOE_ARCHITECTURES,
}


KIND_NAMES = {int: "an integer", float: "a finite number", bool: "true or false"}


def _field(hf: dict[str, Any], name: str, source: str, default: Any = ..., kind: type = int) -> Any:
    """hf[name] (or `default` when absent or null), which must be of `kind` (int, float, bool):
    a wrong type is one error naming the file and field, never a TypeError later on."""
    if name not in hf or hf[name] is None:
        if default is ...:
            raise LLMInternalsError(f"{source}: missing field {name!r}")
        return default
    value = hf[name]
    if kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        ok = ok and math.isfinite(value)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, kind)
    if not ok:
        raise LLMInternalsError(
            f"{source}: field {name!r} must be {KIND_NAMES[kind]}, got {value!r}"
        )
    return float(value) if kind is float else value


def _architecture(hf: dict[str, Any], default: str, source: str) -> str:
    """The first entry of `architectures` (default when absent), checked to be a string."""
    architectures = hf.get("architectures") or [default]
    if not isinstance(architectures, list) or not isinstance(architectures[0], str):
        raise LLMInternalsError(
            f"{source}: field 'architectures' must be a list of names, got {architectures!r}"
        )
    return architectures[0]


def _activation(hf_name: Any, field_name: str, source: str) -> str:
    if not isinstance(hf_name, str) or hf_name not in HF_ACTIVATION_NAMES:
        raise LLMInternalsError(
            f"{source}: {field_name} {hf_name!r} is not supported",
            hint=f"supported: {', '.join(sorted(HF_ACTIVATION_NAMES))}",
        )
    return HF_ACTIVATION_NAMES[hf_name]


def config_from_hf(hf: dict[str, Any], source: str) -> ModelConfig:
    """Our ModelConfig for an HF decoder config.json (already parsed)."""
    model_type = hf.get("model_type")
    if model_type == "gpt2":
        return _gpt2_config(hf, source)
    if model_type in LLAMA_LIKE:
        return _llama_config(hf, source)
    raise LLMInternalsError(f"{source}: model_type {model_type!r} is not a supported decoder")


def _gpt2_config(hf: dict[str, Any], source: str) -> ModelConfig:
    for name, supported in (
        ("scale_attn_by_inverse_layer_idx", False),
        ("scale_attn_weights", True),
        ("add_cross_attention", False),
    ):
        if hf.get(name, supported) != supported:
            raise LLMInternalsError(f"{source}: {name}={hf[name]!r} is not supported")
    d_model = _field(hf, "n_embd", source)
    return ModelConfig(
        family="gpt2",
        vocab_size=_field(hf, "vocab_size", source),
        d_model=d_model,
        n_layers=_field(hf, "n_layer", source),
        n_heads=_field(hf, "n_head", source),
        d_ff=_field(hf, "n_inner", source, 4 * d_model),
        max_seq_len=_field(hf, "n_positions", source, 1024),
        position="learned",
        norm="layernorm",
        norm_eps=_field(hf, "layer_norm_epsilon", source, 1e-5, float),
        ffn="mlp",
        activation=_activation(
            hf.get("activation_function", "gelu_new"), "activation_function", source
        ),
        qkv_bias=True,
        attn_out_bias=True,
        mlp_bias=True,
        tie_embeddings=_field(hf, "tie_word_embeddings", source, True, bool),
    )


def _rope_settings(hf: dict[str, Any], source: str) -> tuple[float, dict | None]:
    params = hf.get("rope_parameters") or {}
    legacy = hf.get("rope_scaling") or {}
    for name, value in (("rope_parameters", params), ("rope_scaling", legacy)):
        if not isinstance(value, dict):
            raise LLMInternalsError(f"{source}: field {name!r} must be an object, got {value!r}")
    merged = {**legacy, **params}
    theta = _field(merged, "rope_theta", f"{source}: rope parameters",
                   _field(hf, "rope_theta", source, 10000.0, float), float)  # fmt: skip
    rope_type = merged.get("rope_type", merged.get("type", "default"))
    if merged.get("partial_rotary_factor", hf.get("partial_rotary_factor", 1.0)) != 1.0:
        raise LLMInternalsError(f"{source}: partial_rotary_factor other than 1.0 is not supported")
    if rope_type == "default":
        return float(theta), None
    if rope_type == "llama3":
        scaling = {"rope_type": "llama3"}
        for key in ("factor", "low_freq_factor", "high_freq_factor"):
            scaling[key] = _field(merged, key, f"{source}: rope parameters", kind=float)
        scaling["original_max_position_embeddings"] = merged.get(
            "original_max_position_embeddings", hf.get("max_position_embeddings")
        )
        return float(theta), scaling
    raise LLMInternalsError(
        f"{source}: rope_type {rope_type!r} is not supported", hint="supported: default, llama3"
    )


def _llama_config(hf: dict[str, Any], source: str) -> ModelConfig:
    family = hf["model_type"]
    attention = ATTENTION_FAMILY.get(family, family)  # MoE families: see hf_moe_config.py
    n_heads = _field(hf, "num_attention_heads", source)
    d_model = _field(hf, "hidden_size", source)
    n_layers = _field(hf, "num_hidden_layers", source)
    theta, scaling = _rope_settings(hf, source)
    sliding_window = None
    if family == "mistral":
        sliding_window = hf.get("sliding_window", 4096)  # MistralConfig's default
    elif family == "mixtral":
        sliding_window = hf.get("sliding_window")  # MixtralConfig's default: none
    elif hf.get("use_sliding_window", False):
        raise LLMInternalsError(f"{source}: use_sliding_window=true is not supported for {family}")
    attention_bias = _field(hf, "attention_bias", source, False, bool)
    qkv_bias = attention_bias
    if attention == "qwen2":  # q/k/v biases (transformers 5 names the switch qkv_bias)
        qkv_bias = _field(hf, "qkv_bias", source, True, bool)
    moe, d_ff = None, None
    if family in MOE_ARCHITECTURES:
        moe, d_ff = moe_from_hf(hf, n_layers, source)
    return ModelConfig(
        family=family,
        vocab_size=_field(hf, "vocab_size", source),
        d_model=d_model,
        n_layers=n_layers,
        n_heads=n_heads,
        n_kv_heads=_field(hf, "num_key_value_heads", source, n_heads),
        head_dim=_field(hf, "head_dim", source, d_model // n_heads),
        d_ff=d_ff or _field(hf, "intermediate_size", source),
        max_seq_len=_field(hf, "max_position_embeddings", source),
        position="rope",
        norm="rmsnorm",
        norm_eps=_field(hf, "rms_norm_eps", source, 1e-6, float),
        ffn="gated",
        activation=_activation(hf.get("hidden_act", "silu"), "hidden_act", source),
        qkv_bias=qkv_bias,
        attn_out_bias=False if attention == "qwen2" else attention_bias,
        mlp_bias=_field(hf, "mlp_bias", source, False, bool),
        qk_norm=attention == "qwen3",
        rope_theta=theta,
        rope_scaling=scaling,
        sliding_window=sliding_window,
        tie_embeddings=_field(hf, "tie_word_embeddings", source, False, bool),
        moe=moe,
    )


def export_family(config: ModelConfig) -> str:
    """The HF family a config can be written as; a clear error when there is none."""
    if config.family in ARCHITECTURES:
        family = config.family
    elif config.position == "learned" and config.norm == "layernorm" and config.ffn == "mlp":
        family = "gpt2"
    elif config.moe is not None:
        family = infer_moe_family(config)
    elif config.position == "rope" and config.norm == "rmsnorm" and config.ffn == "gated":
        family = "qwen3" if config.qk_norm else "qwen2" if config.qkv_bias else "llama"
    else:
        raise LLMInternalsError(
            f"model config (family {config.family!r}) has no HF decoder equivalent"
        )
    problems = moe_export_problems(config, family)
    attention = ATTENTION_FAMILY.get(family, family)
    if family == "gpt2":
        if (
            config.n_kv_heads != config.n_heads
            or config.head_dim * config.n_heads != config.d_model
        ):
            problems.append("GPT-2 needs n_kv_heads == n_heads and head_dim == d_model / n_heads")
        if not (config.qkv_bias and config.attn_out_bias and config.mlp_bias):
            problems.append("GPT-2 has biases everywhere")
    else:
        if config.qk_norm != (attention == "qwen3"):
            problems.append("qk_norm is Qwen3's alone")
        if family == "qwen2" and (not config.qkv_bias or config.attn_out_bias):
            problems.append("Qwen2 has q/k/v biases and no output bias")
        if attention == "qwen2" and config.attn_out_bias:
            problems.append(f"{family} has no output bias")
        if attention != "qwen2" and config.qkv_bias != config.attn_out_bias:
            problems.append(f"{family} has biases on all four attention projections or none")
        if family == "mixtral" and config.qkv_bias:
            problems.append("mixtral has no attention biases")
        if config.sliding_window is not None and attention != "mistral":
            problems.append("only Mistral and Mixtral have a sliding window here")
    if config.norm_position != "pre" or config.dropout:
        problems.append("HF decoders are pre-norm (and dropout is not exported)")
    if problems:
        raise LLMInternalsError(f"cannot export as {family}: " + "; ".join(problems))
    return family


def config_to_hf(config: ModelConfig) -> dict[str, Any]:
    """An HF config.json dict for `config` (transformers 5 field names)."""
    family = export_family(config)
    act = {"gelu": "gelu", "gelu_tanh": "gelu_new", "relu": "relu", "silu": "silu"}[
        config.activation
    ]
    common = {"architectures": [ARCHITECTURES[family]], "model_type": family, "dtype": "float32"}
    if family == "gpt2":
        return common | {
            "vocab_size": config.vocab_size,
            "n_embd": config.d_model,
            "n_layer": config.n_layers,
            "n_head": config.n_heads,
            "n_inner": config.d_ff,
            "n_positions": config.max_seq_len,
            "activation_function": act,
            "layer_norm_epsilon": config.norm_eps,
            "tie_word_embeddings": config.tie_embeddings,
        }
    rope = {"rope_type": "default", "rope_theta": config.rope_theta}
    if config.rope_scaling is not None:
        rope = {**config.rope_scaling, "rope_theta": config.rope_theta}
    out = common | {
        "vocab_size": config.vocab_size,
        "hidden_size": config.d_model,
        "num_hidden_layers": config.n_layers,
        "num_attention_heads": config.n_heads,
        "num_key_value_heads": config.n_kv_heads,
        "head_dim": config.head_dim,
        "intermediate_size": config.d_ff,
        "max_position_embeddings": config.max_seq_len,
        "hidden_act": act,
        "rms_norm_eps": config.norm_eps,
        "rope_theta": config.rope_theta,
        "rope_parameters": rope,
        "tie_word_embeddings": config.tie_embeddings,
    }
    attention = ATTENTION_FAMILY.get(family, family)
    if attention in ("llama", "qwen3"):
        out["attention_bias"] = config.qkv_bias
    if family == "qwen2_moe":
        out["qkv_bias"] = config.qkv_bias
    if family == "llama":
        out["mlp_bias"] = config.mlp_bias
    if attention == "mistral":
        out["sliding_window"] = config.sliding_window
    if attention in ("qwen2", "qwen3"):
        out["use_sliding_window"] = False
    if family in MOE_ARCHITECTURES:
        out |= moe_to_hf(config, family)
    return out
