"""One configuration dataclass for every model variant, validated on construction.

A GPT-2 and a Llama differ only in choices this config names: learned positions or RoPE,
LayerNorm or RMSNorm, a GELU MLP or SwiGLU, biases, how many key/value heads, tied embeddings.
The model classes read these fields; there is no subclass per family. `family` records where a
config came from (and how to export it to HF); it does not change behaviour.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llm_internals.errors import LLMInternalsError
from llm_internals.layers.activations import ACTIVATIONS
from llm_internals.layers.mla import MLAConfig
from llm_internals.layers.moe import MoEConfig

FAMILIES = ("custom", "gpt2", "llama", "mistral", "qwen2", "qwen3", "bert", "marian",
            "deepseek_v3", "mixtral", "qwen2_moe", "qwen3_moe")  # fmt: skip
POSITIONS = ("learned", "rope", "sinusoidal", "none")
NORMS = ("layernorm", "rmsnorm")
NORM_POSITIONS = ("pre", "post")
FFNS = ("mlp", "gated")
ATTN_IMPLS = ("scratch", "sdpa", "flash")
ROPE_LAYOUTS = ("half", "interleaved")
ROPE_TYPES = ("default", "llama3", "yarn")
LLAMA3_KEYS = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")
YARN_KEYS = ("factor", "original_max_position_embeddings")  # required; optional: YARN_OPTIONAL
YARN_OPTIONAL = ("beta_fast", "beta_slow", "mscale", "mscale_all_dim", "attention_factor")


@dataclass
class ModelConfig:
    """Shape and architecture of a transformer. Defaults describe a small Llama-style decoder.

    head_dim defaults to d_model // n_heads, n_kv_heads to n_heads, d_ff to 4 * d_model.
    rope_scaling is None or {"rope_type": "llama3", "factor", "low_freq_factor",
    "high_freq_factor", "original_max_position_embeddings"} or {"rope_type": "yarn", "factor",
    "original_max_position_embeddings", optional YARN_OPTIONAL} (layers/rope.py).
    attn_impl "scratch" runs attention as its recorded steps; "sdpa" calls torch's fused kernel;
    "flash" the tiled flash attention (layers/flash_attention.py). fused_ops swaps the
    written-out norms and activations for torch's single kernels. Scratch without fused_ops is
    what lessons show; sdpa with fused_ops is the fast path.

    moe (None: every layer has a dense FFN of width d_ff) holds the fields of
    layers.moe.MoEConfig other than d_model (d_expert, n_experts, top_k, router, ...) plus
    `dense_layers`, the layer indices that keep the dense FFN (DeepSeek's first_k_dense_replace,
    Qwen-MoE's mlp_only_layers). mla (None: ordinary multi-head attention) holds the fields of
    layers.mla.MLAConfig other than hidden_size, num_attention_heads and rope_theta, which come
    from this config, and rms_norm_eps (1e-6 for the latent norms, as in HF): kv_lora_rank,
    q_lora_rank, qk_nope_head_dim, qk_rope_head_dim, v_head_dim, rope_interleave.
    """

    vocab_size: int
    d_model: int
    n_layers: int
    n_heads: int
    n_kv_heads: int | None = None
    head_dim: int | None = None
    d_ff: int | None = None
    max_seq_len: int = 1024
    family: str = "custom"
    position: str = "rope"
    norm: str = "rmsnorm"
    norm_eps: float = 1e-6
    norm_position: str = "pre"
    ffn: str = "gated"
    activation: str = "silu"
    qkv_bias: bool = False
    attn_out_bias: bool = False
    mlp_bias: bool = False
    qk_norm: bool = False
    rope_theta: float = 10000.0
    rope_scaling: dict[str, Any] | None = None
    rope_layout: str = "half"
    sliding_window: int | None = None
    tie_embeddings: bool = False
    dropout: float = 0.0
    attn_impl: str = "scratch"
    fused_ops: bool = False
    moe: dict[str, Any] | None = None
    mla: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.n_kv_heads is None:
            self.n_kv_heads = self.n_heads
        if self.head_dim is None:
            _positive_int(self, "d_model")
            _positive_int(self, "n_heads")
            if self.d_model % self.n_heads != 0:
                raise LLMInternalsError(
                    f"model config: d_model={self.d_model} is not divisible by "
                    f"n_heads={self.n_heads}",
                    hint="change one of them, or give head_dim explicitly",
                )
            self.head_dim = self.d_model // self.n_heads
        if self.d_ff is None:
            self.d_ff = 4 * self.d_model
        self.validate()

    def validate(self) -> None:
        """Raise LLMInternalsError naming the first field with an impossible value."""
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "head_dim"):
            _positive_int(self, name)
        for name in ("d_ff", "max_seq_len"):
            _positive_int(self, name)
        if self.n_kv_heads > self.n_heads or self.n_heads % self.n_kv_heads != 0:
            raise LLMInternalsError(
                f"model config: n_heads={self.n_heads} is not a multiple of "
                f"n_kv_heads={self.n_kv_heads}",
                hint="each key/value head must serve a whole group of query heads",
            )
        _one_of(self, "family", FAMILIES)
        _one_of(self, "position", POSITIONS)
        _one_of(self, "norm", NORMS)
        _one_of(self, "norm_position", NORM_POSITIONS)
        _one_of(self, "ffn", FFNS)
        _one_of(self, "activation", tuple(ACTIVATIONS))
        _one_of(self, "attn_impl", ATTN_IMPLS)
        _one_of(self, "rope_layout", ROPE_LAYOUTS)
        for name in ("qkv_bias", "attn_out_bias", "mlp_bias", "qk_norm", "tie_embeddings",
                     "fused_ops"):  # fmt: skip
            if not isinstance(getattr(self, name), bool):
                raise LLMInternalsError(
                    f"model config: {name} must be true or false, got {getattr(self, name)!r}"
                )
        if not (_finite_number(self.norm_eps) and self.norm_eps > 0):
            raise LLMInternalsError(f"model config: norm_eps must be > 0, got {self.norm_eps!r}")
        if not (_finite_number(self.dropout) and 0.0 <= self.dropout < 1.0):
            raise LLMInternalsError(
                f"model config: dropout must be in [0, 1), got {self.dropout!r}"
            )
        if self.position == "rope":
            if self.head_dim % 2 != 0:
                raise LLMInternalsError(
                    f"model config: RoPE needs an even head_dim, got {self.head_dim}"
                )
            if not (_finite_number(self.rope_theta) and self.rope_theta > 0):
                raise LLMInternalsError(
                    f"model config: rope_theta must be > 0, got {self.rope_theta!r}"
                )
        if self.rope_scaling is not None:
            _validate_rope_scaling(self.rope_scaling)
        if self.moe is not None:
            moe_layer_config(self, 0)  # raises, naming the field, when a MoE field is wrong
        if self.mla is not None:
            mla_layer_config(self)
        if not isinstance(self.extra, dict):
            raise LLMInternalsError(f"model config: extra must be an object, got {self.extra!r}")
        if self.sliding_window is not None and not (
            isinstance(self.sliding_window, int)
            and not isinstance(self.sliding_window, bool)
            and self.sliding_window > 0
        ):
            raise LLMInternalsError(
                f"model config: sliding_window must be a positive int or null, "
                f"got {self.sliding_window!r}"
            )

    @property
    def n_rep(self) -> int:
        """Query heads per key/value head (1 for MHA, n_heads for MQA)."""
        return self.n_heads // self.n_kv_heads

    def replace(self, **changes: Any) -> ModelConfig:
        """A validated copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "model config") -> ModelConfig:
        """Build from a dict; unknown or missing fields are named in the error."""
        if not isinstance(data, dict):
            raise LLMInternalsError(f"{source}: expected a JSON object, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise LLMInternalsError(
                f"{source}: unknown field(s) {', '.join(unknown)}",
                hint=f"known fields: {', '.join(sorted(known))}",
            )
        required = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING
                    and f.default_factory is dataclasses.MISSING]  # fmt: skip
        missing = [name for name in required if name not in data]
        if missing:
            raise LLMInternalsError(f"{source}: missing field(s) {', '.join(missing)}")
        try:
            return cls(**data)
        except LLMInternalsError as err:  # name the file, not just "model config"
            raise LLMInternalsError(
                f"{source}: {err.message.removeprefix('model config: ')}", err.hint
            ) from None
        except TypeError as err:  # arithmetic on a wrongly typed field before validation
            raise LLMInternalsError(f"{source}: a field has the wrong type ({err})") from None

    def save(self, path: str | Path) -> None:
        """Write as JSON (atomically: temp file, then rename)."""
        from llm_internals.files import atomic_write_text

        atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> ModelConfig:
        from llm_internals.files import read_json

        return cls.from_dict(read_json(path, "model config file"), source=str(path))


MOE_LAYER_KEYS = ("dense_layers",)


def moe_layer_config(config: ModelConfig, layer_idx: int) -> MoEConfig | None:
    """The MoE layer of block `layer_idx`, or None where the block keeps its dense FFN."""
    if config.moe is None:
        return None
    if not isinstance(config.moe, dict):
        raise LLMInternalsError(f"model config: moe must be an object or null, got {config.moe!r}")
    fields = {k: v for k, v in config.moe.items() if k not in MOE_LAYER_KEYS}
    known = {f.name for f in dataclasses.fields(MoEConfig)} - {"d_model"}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise LLMInternalsError(
            f"model config: unknown moe field(s) {', '.join(unknown)}",
            hint=f"known: {', '.join(sorted(known | set(MOE_LAYER_KEYS)))}",
        )
    dense = config.moe.get("dense_layers", [])
    if not isinstance(dense, list) or not all(
        isinstance(i, int) and not isinstance(i, bool) and 0 <= i < config.n_layers for i in dense
    ):
        raise LLMInternalsError(
            f"model config: moe.dense_layers must be a list of layer indices below "
            f"n_layers={config.n_layers}, got {dense!r}"
        )
    for name in ("d_expert", "n_experts", "top_k"):
        value = fields.get(name)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise LLMInternalsError(
                f"model config: moe.{name} must be a positive integer, got {value!r}"
            )
    try:
        layer = MoEConfig(d_model=config.d_model, **fields).validate()
    except LLMInternalsError as err:
        raise LLMInternalsError(f"model config: moe: {err.message}", err.hint) from None
    return None if layer_idx in dense else layer


def mla_layer_config(config: ModelConfig) -> MLAConfig | None:
    """The Multi-head Latent Attention shape of every block, or None for ordinary attention."""
    if config.mla is None:
        return None
    if not isinstance(config.mla, dict):
        raise LLMInternalsError(f"model config: mla must be an object or null, got {config.mla!r}")
    own = {"hidden_size", "num_attention_heads", "rms_norm_eps", "rope_theta", "rope_scaling"}
    known = {f.name for f in dataclasses.fields(MLAConfig)} - own
    unknown = sorted(set(config.mla) - known)
    if unknown:
        raise LLMInternalsError(
            f"model config: unknown mla field(s) {', '.join(unknown)}",
            hint=f"known: {', '.join(sorted(known))}",
        )
    try:
        return MLAConfig(
            hidden_size=config.d_model,
            num_attention_heads=config.n_heads,
            # the latent norms keep RMSNorm's default 1e-6 whatever rms_norm_eps says, as in
            # transformers' DeepseekV3Attention and DeepSeek's inference code
            rms_norm_eps=1e-6,
            rope_theta=config.rope_theta,
            rope_scaling=config.rope_scaling,
            **config.mla,
        )
    except LLMInternalsError as err:
        raise LLMInternalsError(
            f"model config: mla: {err.message.removeprefix('MLA config: ')}", err.hint
        ) from None
    except TypeError as err:
        raise LLMInternalsError(f"model config: mla: a field is missing or wrong ({err})") from None


def _positive_int(config: ModelConfig, name: str) -> None:
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise LLMInternalsError(f"model config: {name} must be a positive integer, got {value!r}")


def _one_of(config: ModelConfig, name: str, allowed: tuple[str, ...]) -> None:
    value = getattr(config, name)
    if value not in allowed:
        raise LLMInternalsError(
            f"model config: unknown {name} {value!r}", hint=f"use one of {', '.join(allowed)}"
        )


def _finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _validate_rope_scaling(scaling: Any) -> None:
    if not isinstance(scaling, dict):
        raise LLMInternalsError(
            f"model config: rope_scaling must be an object or null, got {scaling!r}"
        )
    rope_type = scaling.get("rope_type", "default")
    if rope_type not in ROPE_TYPES:
        raise LLMInternalsError(
            f"model config: rope_scaling type {rope_type!r} is not supported",
            hint=f"supported: {', '.join(ROPE_TYPES)}",
        )
    if rope_type in ("llama3", "yarn"):
        required = LLAMA3_KEYS if rope_type == "llama3" else YARN_KEYS
        missing = [key for key in required if key not in scaling]
        if missing:
            raise LLMInternalsError(
                f"model config: {rope_type} rope_scaling lacks {', '.join(missing)}"
            )
        optional = [key for key in YARN_OPTIONAL if scaling.get(key)]  # 0/null: not used
        wrong = [
            key
            for key in (*required, *(optional if rope_type == "yarn" else ()))
            if not (_finite_number(scaling[key]) and scaling[key] > 0)
        ]
        if wrong:
            raise LLMInternalsError(
                f"model config: rope_scaling {wrong[0]} must be a number > 0, "
                f"got {scaling[wrong[0]]!r}"
            )
