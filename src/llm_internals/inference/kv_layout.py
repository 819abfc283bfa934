"""What the KV cache keeps per token per layer, for any decoder config: one home for the shape
that the contiguous cache, the paged pool and the memory estimates all size from.

    ordinary attention (MHA/GQA/MQA):  keys and values, n_kv_heads x head_dim each
    MLA (DeepSeek-V2/V3):              one latent k' = [c_kv ; k_rope] of d_c + d_r values;
                                       the value is c_kv, the latent's first d_c features,
                                       read from the same storage (layers/mla.py)

values per token per layer: 2 x n_kv_heads x head_dim for the first, d_c + d_r for MLA
(DeepSeek-V3: 2 x 128 x 128 = 32,768 for MHA of the same heads, 512 + 64 = 576 for MLA).
"""

from __future__ import annotations

from dataclasses import dataclass

from llm_internals.models.config import ModelConfig, mla_layer_config


@dataclass(frozen=True)
class KVLayout:
    """Per layer and token: n_kv_heads keys of key_dim values and values of value_dim.
    values_in_keys: the values are the keys' first value_dim features and are not stored."""

    n_kv_heads: int
    key_dim: int
    value_dim: int
    values_in_keys: bool = False

    @property
    def values_per_token(self) -> int:
        """Numbers stored per token per layer."""
        stored_value = 0 if self.values_in_keys else self.value_dim
        return self.n_kv_heads * (self.key_dim + stored_value)

    @property
    def latent_value_dim(self) -> int | None:
        """The caches' `latent_value_dim` argument: value_dim when values live in the keys."""
        return self.value_dim if self.values_in_keys else None


def kv_layout(config: ModelConfig) -> KVLayout:
    """The cache layout of a decoder with this config."""
    mla = mla_layer_config(config)
    if mla is not None:
        width = mla.kv_lora_rank + mla.qk_rope_head_dim
        return KVLayout(1, width, mla.kv_lora_rank, values_in_keys=True)
    return KVLayout(config.n_kv_heads, config.head_dim, config.head_dim)
