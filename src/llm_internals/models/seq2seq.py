"""The encoder-decoder model in the original Transformer layout (Vaswani et al. 2017; Marian).

    encoder:  e_0 = sqrt(d) E[src] + PE(0..S-1)
              e_l = EncoderBlock(e_{l-1})                      (bidirectional, padding masked)
    decoder:  h_0 = sqrt(d) E[tgt] + PE(0..T-1)
              a   = Norm(h + SelfAttention(h))                 (causal: target token t sees <= t)
              c   = Norm(a + CrossAttention(a, e_L))           (queries from the decoder,
                                                                keys/values from the encoder)
              h_l = Norm(c + FFN(c))
    logits = h_L E^T + final_logits_bias

The encoder reads the whole source sentence; the decoder writes the target one token at a time,
and at every layer looks back at the source through cross-attention. Multiplying embeddings by
sqrt(d_model) brings their entries (initialised around 1/sqrt(d)) to the scale of the sinusoidal
position vectors, whose entries lie in [-1, 1]. Marian shares one embedding table between
source, target and output head ("shared embeddings") and adds a per-token output bias.

Settings beyond ModelConfig live in `config.extra` (see `Seq2SeqSettings`); the encoder's shape is
the config's own (n_layers, n_heads, d_ff), the decoder's may differ.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
from torch import nn

from llm_internals.errors import LLMInternalsError
from llm_internals.layers.embedding import OutputHead, TokenEmbedding
from llm_internals.layers.ffn import make_ffn
from llm_internals.layers.masks import causal_mask, combine_masks, padding_mask
from llm_internals.layers.multihead import AttentionCache
from llm_internals.layers.norm import make_norm
from llm_internals.layers.positional import SinusoidalPositionalEmbedding
from llm_internals.models.config import ModelConfig
from llm_internals.models.encoder import (
    EncoderBlock,
    check_same_shape,
    check_token_ids,
    encoder_padding_mask,
    make_attention,
)
from llm_internals.models.kernel_switches import KernelSwitches
from llm_internals.trace import record


@dataclass(frozen=True)
class Seq2SeqSettings:
    """Encoder-decoder fields from `config.extra`. None means "same as the encoder"."""

    decoder_layers: int | None = None
    decoder_heads: int | None = None
    decoder_ffn: int | None = None
    decoder_vocab_size: int | None = None  # only when embeddings are not shared
    share_embeddings: bool = True  # one table for source and target tokens
    scale_embedding: bool = True  # multiply token embeddings by sqrt(d_model)
    sinusoidal_layout: str = "interleaved"  # "halves" for Marian (see layers/positional.py)
    pad_token_id: int = 0
    decoder_start_token_id: int = 0
    eos_token_id: int = 0

    @classmethod
    def from_config(cls, config: ModelConfig) -> Seq2SeqSettings:
        known = {f.name for f in fields(cls)}
        values = {key: value for key, value in config.extra.items() if key in known}
        settings = cls(**values)
        settings._validate(config)
        return settings

    def _validate(self, config: ModelConfig) -> None:
        for name in ("decoder_layers", "decoder_heads", "decoder_ffn", "decoder_vocab_size"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value <= 0):  # fmt: skip
                raise LLMInternalsError(
                    f"model config: extra.{name} must be a positive integer, got {value!r}"
                )
        for name in ("share_embeddings", "scale_embedding"):
            if not isinstance(getattr(self, name), bool):
                raise LLMInternalsError(
                    f"model config: extra.{name} must be true or false, got {getattr(self, name)!r}"
                )
        if self.sinusoidal_layout not in ("interleaved", "halves"):
            raise LLMInternalsError(
                f"model config: unknown extra.sinusoidal_layout {self.sinusoidal_layout!r}",
                hint="use interleaved or halves",
            )
        if self.share_embeddings and self.decoder_vocab_size not in (None, config.vocab_size):
            raise LLMInternalsError(
                f"model config: shared embeddings need decoder_vocab_size == vocab_size, got "
                f"{self.decoder_vocab_size} and {config.vocab_size}"
            )
        if config.position != "sinusoidal":
            raise LLMInternalsError(
                f"model config: the encoder-decoder uses sinusoidal positions, "
                f"got position={config.position!r}"
            )

    def target_vocab_size(self, config: ModelConfig) -> int:
        return self.decoder_vocab_size or config.vocab_size

    def decoder_config(self, config: ModelConfig) -> ModelConfig:
        """The config of the decoder stack (its own depth, heads and FFN width)."""
        heads = self.decoder_heads or config.n_heads
        return config.replace(
            n_layers=self.decoder_layers or config.n_layers,
            n_heads=heads,
            n_kv_heads=None if heads != config.n_heads else config.n_kv_heads,
            head_dim=None if heads != config.n_heads else config.head_dim,
            d_ff=self.decoder_ffn or config.d_ff,
        )


class CrossAttentionBlock(nn.Module):
    """A decoder layer: causal self-attention, cross-attention to the encoder, feed-forward."""

    def __init__(self, config: ModelConfig, layer_idx: int) -> None:
        super().__init__()
        self.pre_norm = config.norm_position == "pre"
        self.self_attn = make_attention(config, layer_idx)
        self.norm1 = make_norm(config.norm, config.d_model, config.norm_eps)
        self.cross_attn = make_attention(config, layer_idx)
        self.norm2 = make_norm(config.norm, config.d_model, config.norm_eps)
        self.ffn = make_ffn(
            config.ffn, config.d_model, config.d_ff, config.activation, config.mlp_bias
        )
        self.norm3 = make_norm(config.norm, config.d_model, config.norm_eps)
        self.dropout = nn.Dropout(config.dropout)

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor,
        self_mask: torch.Tensor | None,
        memory_mask: torch.Tensor | None,
        self_cache: AttentionCache | None = None,
        cross_cache: AttentionCache | None = None,
    ) -> torch.Tensor:
        """x (batch, T, d) target states; memory (batch, S, d) the encoder's output.

        self_mask None means plain causal; memory_mask hides padded source positions. The caches
        (generation only) hold the decoder's past K/V and the encoder output's K/V.
        """
        self_attend = lambda h: self.self_attn(h, mask=self_mask, causal=True, cache=self_cache)  # noqa: E731
        cross_attend = lambda h: self.cross_attn(h, memory, mask=memory_mask, cache=cross_cache)  # noqa: E731
        if self.pre_norm:
            x = x + self.dropout(self_attend(self.norm1(x)))
            record("residual_after_self_attention", x)
            x = x + self.dropout(cross_attend(self.norm2(x)))
            record("residual_after_cross_attention", x)
            return x + self.dropout(self.ffn(self.norm3(x)))
        x = self.norm1(x + self.dropout(self_attend(x)))
        record("residual_after_self_attention", x)
        x = self.norm2(x + self.dropout(cross_attend(x)))
        record("residual_after_cross_attention", x)
        return self.norm3(x + self.dropout(self.ffn(x)))


class Seq2SeqLM(KernelSwitches, nn.Module):
    """Source ids (batch, S) and target ids (batch, T) -> next-target-token logits (batch, T, V).

    `tok_emb` is the target-side table (tied to the output head); the source side uses it too
    when embeddings are shared, and `src_emb` otherwise.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.settings = settings = Seq2SeqSettings.from_config(config)
        d = config.d_model
        target_vocab = settings.target_vocab_size(config)
        self.tok_emb = TokenEmbedding(target_vocab, d)
        self.src_emb = None if settings.share_embeddings else TokenEmbedding(config.vocab_size, d)
        self.embed_scale = math.sqrt(d) if settings.scale_embedding else 1.0
        self.pos_emb = SinusoidalPositionalEmbedding(
            config.max_seq_len, d, layout=settings.sinusoidal_layout
        )
        self.dropout = nn.Dropout(config.dropout)
        self.encoder_blocks = nn.ModuleList(EncoderBlock(config, i) for i in range(config.n_layers))
        decoder_config = settings.decoder_config(config)
        self.decoder_blocks = nn.ModuleList(
            CrossAttentionBlock(decoder_config, i) for i in range(decoder_config.n_layers)
        )
        pre = config.norm_position == "pre"
        self.encoder_norm = make_norm(config.norm, d, config.norm_eps) if pre else None
        self.decoder_norm = make_norm(config.norm, d, config.norm_eps) if pre else None
        self.lm_head = OutputHead(d, target_vocab)
        self.final_logits_bias = nn.Buffer(torch.zeros(target_vocab))
        self.apply(_init_weights)
        if config.tie_embeddings:
            self.lm_head.tie_to(self.tok_emb)
        self.set_fused_ops(config.fused_ops)

    def forward(
        self,
        src_ids: torch.Tensor,
        tgt_ids: torch.Tensor,
        src_mask: torch.Tensor | None = None,
        tgt_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits for every target position: HF `MarianMTModel(input_ids, attention_mask,
        decoder_input_ids, decoder_attention_mask).logits`. Masks are 0/1, 1 for real tokens."""
        memory = self.encode(src_ids, src_mask)
        return self.logits(self.decode(tgt_ids, memory, src_mask, tgt_mask))

    def encode(self, src_ids: torch.Tensor, src_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The encoder's output vectors (batch, S, d_model) for source ids (batch, S)."""
        table = self.tok_emb if self.src_emb is None else self.src_emb
        x = self._embed(src_ids, table, "source ids")
        mask = encoder_padding_mask(src_mask, src_ids, "src_mask")
        for block in self.encoder_blocks:
            x = block(x, mask)
            record("encoder_block_output", x)
        if self.encoder_norm is not None:
            x = self.encoder_norm(x)
        record("encoder_output", x, note="keys and values of every cross-attention")
        return x

    def decode(
        self,
        tgt_ids: torch.Tensor,
        memory: torch.Tensor,
        src_mask: torch.Tensor | None = None,
        tgt_mask: torch.Tensor | None = None,
        cache: AttentionCache | None = None,
        cross_cache: AttentionCache | None = None,
    ) -> torch.Tensor:
        """The decoder's output vectors (batch, T, d_model), attending to `memory` (batch, S, d).

        Generation passes `cache` (the decoder's past K/V; new tokens continue at position
        cache.past_length()) and `cross_cache` (the encoder output's K/V, computed once)."""
        start = 0 if cache is None else cache.past_length()
        x = self._embed(tgt_ids, self.tok_emb, "target ids", start)
        if memory.dim() != 3 or memory.shape[0] != x.shape[0] or memory.shape[2] != x.shape[2]:
            raise LLMInternalsError(
                f"encoder output must have shape ({x.shape[0]}, source_len, {x.shape[2]}), "
                f"got {tuple(memory.shape)}"
            )
        memory_mask = None
        if src_mask is not None:
            if src_mask.shape != memory.shape[:2]:
                raise LLMInternalsError(
                    f"src_mask must have shape {tuple(memory.shape[:2])}, got "
                    f"{tuple(src_mask.shape)}"
                )
            memory_mask = None if bool(src_mask.all()) else padding_mask(src_mask)
        self_mask = None  # plain causal
        if tgt_mask is not None:
            check_same_shape(tgt_mask, tgt_ids, "tgt_mask")
            if not bool(tgt_mask.all()):
                length = tgt_ids.shape[1]
                self_mask = combine_masks(
                    causal_mask(length, device=tgt_ids.device), padding_mask(tgt_mask)
                )
        for block in self.decoder_blocks:
            x = block(x, memory, self_mask, memory_mask, cache, cross_cache)
            record("decoder_block_output", x)
        if self.decoder_norm is not None:
            x = self.decoder_norm(x)
        return x

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Output head plus Marian's per-token bias: h E^T + b."""
        logits = self.lm_head(hidden) + self.final_logits_bias.to(hidden.dtype)
        record("seq2seq_logits", logits, note="h E^T + final_logits_bias")
        return logits

    def _embed(
        self, ids: torch.Tensor, table: TokenEmbedding, what: str, start: int = 0
    ) -> torch.Tensor:
        check_token_ids(ids, table.weight.shape[0], what)
        length = start + ids.shape[1]
        if length > self.config.max_seq_len:
            raise LLMInternalsError(
                f"{what}: {length} tokens exceed the model's context of "
                f"max_seq_len={self.config.max_seq_len}",
                hint="truncate the input",
            )
        x = table(ids) * self.embed_scale
        x = x + self.pos_emb(torch.arange(start, length, device=ids.device)[None, :]).to(x.dtype)
        x = self.dropout(x)
        record("embedding", x, note=f"token * {self.embed_scale:.4g} + sinusoidal position")
        return x


def _init_weights(module: nn.Module) -> None:
    """N(0, 0.02) for matrices and tables, zero biases (Marian's HF init)."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)
        if getattr(module, "bias", None) is not None:
            nn.init.zeros_(module.bias)
