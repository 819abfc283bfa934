"""How much memory the KV cache takes, from a model's shape alone.

Every layer stores one key and one value vector per KV head for every token of every sequence:

    bytes = 2 (K and V) x layers x kv_heads x head_dim x tokens x batch x bytes_per_element

Grouped-query attention (kv_heads < heads) and multi-query attention (kv_heads = 1) shrink it by
heads / kv_heads; the dtype sets bytes_per_element. Multi-head latent attention (DeepSeek-V2/V3,
layers/mla.py) caches one latent per token per layer instead, kv_lora_rank + qk_rope_head_dim
values (512 + 64 = 576 for DeepSeek-V3 against 2 x 128 x 128 = 32,768 for MHA of its heads):

    bytes = layers x (kv_lora_rank + qk_rope_head_dim) x tokens x batch x bytes_per_element

The shape is read from a Hugging Face
config.json (GPT-2, Llama, Mistral, Qwen, Falcon key names) or from one of our ModelConfigs; a
published model's config.json fields come from the table in models/published.py, and go through
the same `shape_from_hf_config` as a downloaded file. `load_shape` takes any config the project
or HF writes (see its docstring). (Not modelled: sliding-window layers that keep fewer tokens,
cache quantization, encoder-decoder cross-attention caches.)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llm_internals.errors import LLMInternalsError
from llm_internals.files import read_json
from llm_internals.inference.kv_layout import kv_layout
from llm_internals.models import published
from llm_internals.models.checkpoint import is_own_checkpoint
from llm_internals.models.config import ModelConfig
from llm_internals.models.loading import CONFIG_FILE, resolve_model_directory

DTYPE_BYTES = {
    "float32": 4,
    "float16": 2,
    "bfloat16": 2,
    "float8": 1,
    "int8": 1,
}
DTYPE_ALIASES = {"fp32": "float32", "fp16": "float16", "half": "float16", "bf16": "bfloat16",
                 "fp8": "float8", "float": "float32"}  # fmt: skip

LAYER_KEYS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")
HEAD_KEYS = ("num_attention_heads", "n_head", "num_heads", "n_heads")
KV_HEAD_KEYS = ("num_key_value_heads", "num_kv_heads", "n_kv_heads", "n_head_kv")
HIDDEN_KEYS = ("hidden_size", "n_embd", "d_model")
MLA_KEYS = ("kv_lora_rank", "qk_rope_head_dim")  # HF DeepseekV2/V3 config fields
NOT_DECODERS = ("bert", "marian")  # ModelConfig families of encoder and encoder-decoder models


@dataclass(frozen=True)
class KVShape:
    """What the KV cache size depends on."""

    name: str
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    dtype: str
    latent_dim: int | None = None  # MLA: values cached per token per layer (d_c + d_r)

    @property
    def bytes_per_element(self) -> int:
        return DTYPE_BYTES[self.dtype]

    @property
    def values_per_token_per_layer(self) -> int:
        """2 x kv_heads x head_dim (a key and a value per KV head), or MLA's latent width."""
        return self.latent_dim or 2 * self.kv_heads * self.head_dim

    @property
    def bytes_per_token(self) -> int:
        """K and V (MLA: the latent) of one token in every layer:
        layers x values_per_token_per_layer x bytes."""
        return self.layers * self.values_per_token_per_layer * self.bytes_per_element

    def cache_bytes(self, tokens: int, batch: int = 1) -> int:
        """The whole cache for `batch` sequences of `tokens` tokens each."""
        for name, value in (("tokens", tokens), ("batch", batch)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise LLMInternalsError(
                    f"kv memory: {name} must be a positive integer, got {value!r}"
                )
        return self.bytes_per_token * tokens * batch


def kv_cache_bytes(
    layers: int, kv_heads: int, head_dim: int, tokens: int, batch: int, bytes_per_element: int
) -> int:
    """2 x layers x kv_heads x head_dim x tokens x batch x bytes_per_element."""
    return 2 * layers * kv_heads * head_dim * tokens * batch * bytes_per_element


def normalize_dtype(dtype: Any, source: str = "dtype") -> str:
    """'bf16', 'torch.bfloat16', torch.bfloat16 -> 'bfloat16'; unknown names raise."""
    name = str(dtype).removeprefix("torch.").lower()
    name = DTYPE_ALIASES.get(name, name)
    if name.startswith("float8"):
        name = "float8"
    if name not in DTYPE_BYTES:
        raise LLMInternalsError(
            f"{source}: unknown dtype {dtype!r}", hint=f"use one of {', '.join(DTYPE_BYTES)}"
        )
    return name


def shape_from_hf_config(config: dict[str, Any], name: str = "config") -> KVShape:
    """Read layers, heads, KV heads, head_dim and dtype from an HF config.json dict.

    Multimodal configs keep the language model under "text_config"; that part is used.
    num_key_value_heads defaults to the head count (Falcon's multi_query: true means 1), head_dim to
    hidden_size / heads, and the dtype to float32 (what HF assumes when none is given).
    """
    if not isinstance(config, dict):
        raise LLMInternalsError(f"{name}: expected a JSON object, got {type(config).__name__}")
    if isinstance(config.get("text_config"), dict):
        config = {**config, **config["text_config"]}
    if config.get("is_encoder_decoder") or config.get("model_type") in published.ENCODER_TYPES:
        raise LLMInternalsError(
            f"{name}: model_type {config.get('model_type')!r} is not a decoder-only model",
            hint="kv-memory sizes decoder self-attention caches; encoders keep no KV cache and "
            "encoder-decoder cross-attention caches are not modelled",
        )
    layers = _first_int(config, LAYER_KEYS, name)
    heads = _first_int(config, HEAD_KEYS, name)
    if config.get("multi_query") and not config.get("new_decoder_architecture"):
        kv_heads = 1  # Falcon: multi_query overrides num_kv_heads (as in HF's FalconAttention)
    elif any(config.get(k) is not None for k in KV_HEAD_KEYS):
        kv_heads = _first_int(config, KV_HEAD_KEYS, name)
    else:
        kv_heads = heads
    if config.get("head_dim") is not None:
        head_dim = _first_int(config, ("head_dim",), name)
    else:
        hidden = _first_int(config, HIDDEN_KEYS, name)
        if hidden % heads:
            raise LLMInternalsError(
                f"{name}: hidden size {hidden} is not divisible by {heads} heads",
                hint="give head_dim explicitly in the config",
            )
        head_dim = hidden // heads
    dtype = config.get("torch_dtype") or config.get("dtype") or "float32"
    dtype = normalize_dtype(dtype, f"{name}: field torch_dtype")
    latent_dim = None
    if config.get("kv_lora_rank") is not None:  # DeepSeek-V2/V3 MLA: the latent is cached
        latent_dim = sum(_first_int(config, (key,), name) for key in MLA_KEYS)
    return KVShape(name, layers, heads, kv_heads, head_dim, dtype, latent_dim)


def shape_from_model_config(config: Any, dtype: str = "float32", name: str = "model") -> KVShape:
    """From one of our ModelConfigs (n_layers, n_heads, n_kv_heads, head_dim)."""
    if config.family in NOT_DECODERS:
        raise LLMInternalsError(
            f"{name}: a {config.family} model is not decoder-only",
            hint="kv-memory sizes decoder self-attention caches",
        )
    return KVShape(
        name,
        layers=int(config.n_layers),
        heads=int(config.n_heads),
        kv_heads=int(config.n_kv_heads or config.n_heads),
        head_dim=int(config.head_dim or config.d_model // config.n_heads),
        dtype=normalize_dtype(dtype),
        latent_dim=kv_layout(config).values_per_token if config.mla is not None else None,
    )


def shape_from_config_json(config: Any, name: str) -> KVShape:
    """From any config.json the project or HF writes: our checkpoint's ({"format":
    "llm-internals", "config": {...}}), a bare ModelConfig (`ModelConfig.save`), or HF's.
    Our own configs carry no dtype; the trainer writes float32 weights, so float32 it is."""
    if isinstance(config, dict) and is_own_checkpoint(config):
        model_class = config.get("model_class")
        if model_class != "DecoderLM":
            raise LLMInternalsError(
                f"{name}: model_class {model_class!r} is not a decoder-only model",
                hint="kv-memory sizes decoder self-attention caches",
            )
        model_config = ModelConfig.from_dict(config.get("config"), f"{name}: field config")
        return shape_from_model_config(model_config, name=name)
    if isinstance(config, dict) and "model_type" not in config and "d_model" in config:
        return shape_from_model_config(ModelConfig.from_dict(config, name), name=name)
    return shape_from_hf_config(config, name)


def load_shape(source: str | Path, dtype: str | None = None) -> KVShape:
    """The KV shape of `source`; `dtype` overrides the config's. `source` is, in this order:
    an existing path (a config.json file, a checkpoint folder of ours or HF's, a training run
    folder or one of its step-* folders), or a published model (alias or HF repo id; a local
    folder of the same name wins, as in HF's from_pretrained)."""
    text = str(source)
    path = Path(text)
    if path.is_file():
        shape = shape_from_config_json(read_json(path, "config file"), str(path))
    elif path.is_dir():
        config_path = resolve_model_directory(path) / CONFIG_FILE
        shape = shape_from_config_json(read_json(config_path, "config file"), str(config_path))
    elif published.is_published(text):
        shape = shape_from_hf_config(published.hf_config(text), text)
    else:
        raise LLMInternalsError(
            f"kv memory: {text!r} is neither a published model nor an existing path",
            hint=f"published models: {published.choices()}; or a config.json, a checkpoint "
            "folder or a training run folder",
        )
    if dtype is not None:
        shape = dataclasses.replace(shape, dtype=normalize_dtype(dtype, "--dtype"))
    return shape


def _first_int(config: dict[str, Any], keys: tuple[str, ...], name: str) -> int:
    for key in keys:
        value = config.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise LLMInternalsError(
                f"{name}: field {key} must be a positive integer, got {value!r}"
            )
        return value
    raise LLMInternalsError(
        f"{name}: missing field {keys[0]} (also looked for {', '.join(keys[1:])})",
        hint="is this a decoder model's config.json?",
    )
