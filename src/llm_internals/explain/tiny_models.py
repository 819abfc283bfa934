"""The tiny, seeded models and tokenizer that lessons run the real library code on.

One home for "a model small enough to print": every lesson that needs a DecoderLM builds it
here, so their shapes are stated once and read the same way:

    tiny_decoder(seed)                   2 layers, d_model 8, 2 heads of head_dim 4, d_ff 16,
                                         Llama-style (RoPE, RMSNorm, SwiGLU), vocab of the
                                         tiny tokenizer (29 characters)
    tiny_decoder(seed, **GPT2_STYLE)     the same sizes GPT-2-style (learned positions,
                                         LayerNorm, GELU MLP of 4 x d_model, biases, tied head)
    tiny_decoder(seed, n_layers=1, ...)  any ModelConfig field overridden
    tiny_seq2seq(seed, **ORIGINAL_TRANSFORMER)   an encoder-decoder (Seq2SeqLM), here in the
                                         2017 paper's layout (post-norm, sinusoidal, ReLU)

Lessons that need learned weights (attention patterns, FFN units, next-token distributions)
load the small trained model shipped with the package instead: explain/lesson_model.py.

Seeding follows a training script: `torch.manual_seed(seed)` and then the model's
initialization, so draws after the call continue from there (wrap the call in
`torch.random.fork_rng()` to leave the caller's generator untouched).
"""

from __future__ import annotations

from typing import Any

import torch

from llm_internals.models.config import ModelConfig
from llm_internals.models.decoder import DecoderLM
from llm_internals.models.seq2seq import Seq2SeqLM
from llm_internals.tokenizer.char import CharTokenizer

TINY_ALPHABET = "abcdefghijklmnopqrstuvwxyz .,"
TINY_SHAPE: dict[str, Any] = dict(d_model=8, n_layers=2, n_heads=2, d_ff=16, max_seq_len=64)
GPT2_STYLE: dict[str, Any] = dict(
    family="gpt2", position="learned", norm="layernorm", norm_eps=1e-5, ffn="mlp",
    activation="gelu_tanh", qkv_bias=True, attn_out_bias=True, mlp_bias=True,
    tie_embeddings=True, d_ff=None,  # None: 4 x d_model, as GPT-2
)  # fmt: skip
ORIGINAL_TRANSFORMER: dict[str, Any] = dict(
    position="sinusoidal", norm="layernorm", norm_eps=1e-5, norm_position="post", ffn="mlp",
    activation="relu", qkv_bias=True, attn_out_bias=True, mlp_bias=True, tie_embeddings=True,
    d_ff=None,  # None: 4 x d_model, as the paper (512 -> 2048)
)  # fmt: skip


def tiny_tokenizer() -> CharTokenizer:
    """One id per character of TINY_ALPHABET (lowercase letters, space, period, comma)."""
    return CharTokenizer(TINY_ALPHABET)


def tiny_config(**overrides: Any) -> ModelConfig:
    """TINY_SHAPE with the tiny tokenizer's vocabulary, any field replaced by `overrides`."""
    return ModelConfig(**{"vocab_size": len(TINY_ALPHABET), **TINY_SHAPE, **overrides})


def tiny_decoder(seed: int = 0, **overrides: Any) -> DecoderLM:
    """A random DecoderLM of tiny_config(**overrides), seeded with `seed`, in eval mode."""
    torch.manual_seed(seed)
    return DecoderLM(tiny_config(**overrides)).eval()


def tiny_seq2seq(seed: int = 0, **overrides: Any) -> Seq2SeqLM:
    """A random encoder-decoder Seq2SeqLM of tiny_config(**overrides), seeded, in eval mode."""
    torch.manual_seed(seed)
    return Seq2SeqLM(tiny_config(**overrides)).eval()
