"""Transformer building blocks, each written out as its formula (see each module's docstring)."""

from llm_internals.layers.activations import gelu, gelu_tanh, get_activation, relu, silu
from llm_internals.layers.attention import scaled_dot_product_attention, sdpa_attention
from llm_internals.layers.embedding import OutputHead, TokenEmbedding
from llm_internals.layers.ffn import MLP, GatedMLP
from llm_internals.layers.masks import (
    causal_mask,
    combine_masks,
    padding_mask,
    positions_from_attention_mask,
)
from llm_internals.layers.moe import MoEConfig, MoELayer
from llm_internals.layers.multihead import AttentionCache, MultiHeadAttention
from llm_internals.layers.norm import LayerNorm, RMSNorm
from llm_internals.layers.positional import (
    LearnedPositionalEmbedding,
    SinusoidalPositionalEmbedding,
    sinusoidal_table,
)
from llm_internals.layers.rope import (
    RotaryEmbedding,
    apply_rope,
    half_to_interleaved,
    interleaved_to_half,
)

__all__ = [
    "MLP",
    "MoEConfig",
    "MoELayer",
    "AttentionCache",
    "GatedMLP",
    "LayerNorm",
    "LearnedPositionalEmbedding",
    "MultiHeadAttention",
    "OutputHead",
    "RMSNorm",
    "RotaryEmbedding",
    "SinusoidalPositionalEmbedding",
    "TokenEmbedding",
    "apply_rope",
    "causal_mask",
    "combine_masks",
    "gelu",
    "gelu_tanh",
    "get_activation",
    "half_to_interleaved",
    "interleaved_to_half",
    "padding_mask",
    "positions_from_attention_mask",
    "relu",
    "scaled_dot_product_attention",
    "sdpa_attention",
    "silu",
    "sinusoidal_table",
]
