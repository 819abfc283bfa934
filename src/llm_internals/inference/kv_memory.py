"""How much memory the KV cache takes, from a model's shape alone.

Every layer stores one key and one value vector per KV head for every token of every sequence:

    bytes = 2 (K and V) x layers x kv_heads x head_dim x tokens x batch x bytes_per_element

Grouped-query attention (kv_heads < heads) and multi-query attention (kv_heads = 1) shrink it by
heads / kv_heads; the dtype sets bytes_per_element. The shape is read from one of our
ModelConfigs, from a Hugging Face config.json (GPT-2, Llama, Mistral, Qwen, Falcon key names), or
from `PRESETS`: real published configs of well-known models, kept as the config.json keys that
matter here. (Not modelled: sliding-window layers that keep fewer tokens, MLA's compressed
cache, cache quantization.)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llm_internals.errors import LLMInternalsError
from llm_internals.files import read_json

DTYPE_BYTES = {
    "float32": 4,
    "float16": 2,
    "bfloat16": 2,
    "float8": 1,
    "int8": 1,
}
DTYPE_ALIASES = {"fp32": "float32", "fp16": "float16", "half": "float16", "bf16": "bfloat16",
                 "fp8": "float8", "float": "float32"}  # fmt: skip

# Published config.json values (only the keys the KV cache depends on), by Hugging Face repo.
PRESETS: dict[str, dict[str, Any]] = {
    "gpt2": {  # openai-community/gpt2 (no torch_dtype: the weights are float32)
        "model_type": "gpt2", "n_layer": 12, "n_head": 12, "n_embd": 768, "n_positions": 1024,
    },
    "gpt2-xl": {  # openai-community/gpt2-xl
        "model_type": "gpt2", "n_layer": 48, "n_head": 25, "n_embd": 1600, "n_positions": 1024,
    },
    "smollm2-135m": {  # HuggingFaceTB/SmolLM2-135M
        "model_type": "llama", "num_hidden_layers": 30, "num_attention_heads": 9,
        "num_key_value_heads": 3, "hidden_size": 576, "max_position_embeddings": 8192,
        "torch_dtype": "bfloat16",
    },
    "qwen2-0.5b": {  # Qwen/Qwen2-0.5B
        "model_type": "qwen2", "num_hidden_layers": 24, "num_attention_heads": 14,
        "num_key_value_heads": 2, "hidden_size": 896, "torch_dtype": "bfloat16",
    },
    "mistral-7b": {  # mistralai/Mistral-7B-v0.1
        "model_type": "mistral", "num_hidden_layers": 32, "num_attention_heads": 32,
        "num_key_value_heads": 8, "hidden_size": 4096, "max_position_embeddings": 32768,
        "torch_dtype": "bfloat16",
    },
    "falcon-7b": {  # tiiuae/falcon-7b: multi-query attention, one KV head
        "model_type": "falcon", "n_layer": 32, "n_head": 71, "hidden_size": 4544,
        "multi_query": True, "torch_dtype": "bfloat16",
    },
    "llama-3-8b": {  # meta-llama/Meta-Llama-3-8B
        "model_type": "llama", "num_hidden_layers": 32, "num_attention_heads": 32,
        "num_key_value_heads": 8, "hidden_size": 4096, "max_position_embeddings": 8192,
        "torch_dtype": "bfloat16",
    },
    "llama-3-70b": {  # meta-llama/Meta-Llama-3-70B
        "model_type": "llama", "num_hidden_layers": 80, "num_attention_heads": 64,
        "num_key_value_heads": 8, "hidden_size": 8192, "max_position_embeddings": 8192,
        "torch_dtype": "bfloat16",
    },
    "llama-3.1-405b": {  # meta-llama/Llama-3.1-405B
        "model_type": "llama", "num_hidden_layers": 126, "num_attention_heads": 128,
        "num_key_value_heads": 8, "hidden_size": 16384, "max_position_embeddings": 131072,
        "torch_dtype": "bfloat16",
    },
}  # fmt: skip

LAYER_KEYS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")
HEAD_KEYS = ("num_attention_heads", "n_head", "num_heads", "n_heads")
KV_HEAD_KEYS = ("num_key_value_heads", "num_kv_heads", "n_kv_heads", "n_head_kv")
HIDDEN_KEYS = ("hidden_size", "n_embd", "d_model")


@dataclass(frozen=True)
class KVShape:
    """What the KV cache size depends on."""

    name: str
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    dtype: str

    @property
    def bytes_per_element(self) -> int:
        return DTYPE_BYTES[self.dtype]

    @property
    def bytes_per_token(self) -> int:
        """K and V of one token in every layer: 2 x layers x kv_heads x head_dim x bytes."""
        return 2 * self.layers * self.kv_heads * self.head_dim * self.bytes_per_element

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
    return KVShape(name, layers, heads, kv_heads, head_dim, dtype)


def shape_from_model_config(config: Any, dtype: str = "float32", name: str = "model") -> KVShape:
    """From one of our ModelConfigs (n_layers, n_heads, n_kv_heads, head_dim)."""
    return KVShape(
        name,
        layers=int(config.n_layers),
        heads=int(config.n_heads),
        kv_heads=int(config.n_kv_heads or config.n_heads),
        head_dim=int(config.head_dim or config.d_model // config.n_heads),
        dtype=normalize_dtype(dtype),
    )


def load_shape(source: str | Path, dtype: str | None = None) -> KVShape:
    """A preset name, a config.json path, or a directory holding config.json; `dtype` overrides."""
    text = str(source)
    if text.lower() in PRESETS:
        shape = shape_from_hf_config(PRESETS[text.lower()], text.lower())
    else:
        path = Path(text)
        if path.is_dir():
            path = path / "config.json"
        if not path.is_file():
            raise LLMInternalsError(
                f"kv memory: {text!r} is neither a preset nor an existing config file ({path})",
                hint=f"presets: {', '.join(PRESETS)}; or a path to an HF config.json",
            )
        config = read_json(path, "config file")
        shape = shape_from_hf_config(config, str(path))
    if dtype is not None:
        shape = KVShape(shape.name, shape.layers, shape.heads, shape.kv_heads, shape.head_dim,
                        normalize_dtype(dtype, "--dtype"))  # fmt: skip
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
