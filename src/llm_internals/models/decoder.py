"""The decoder-only language model: GPT-2, Llama, Mistral, Qwen2 and Qwen3 from one class.

    h_0 = embed(tokens) [+ learned positions]
    h_l = h_{l-1} + Attention(Norm(h_{l-1}))          (pre-norm; RoPE inside attention)
    h_l = h_l + FFN(Norm(h_l))
    logits = Norm(h_L) W_head^T

Which embedding, norm, FFN and attention variant is used comes from the ModelConfig. Inputs are
checked (integer ids inside the vocabulary, positions inside the context) so that a mistake gives
a clear error instead of an index error deep inside torch. See layers/multihead.py for the
attention-cache protocol that lets generation and the serving engine reuse this model.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from llm_internals.errors import LLMInternalsError
from llm_internals.layers.embedding import OutputHead, TokenEmbedding
from llm_internals.layers.ffn import make_ffn
from llm_internals.layers.masks import (
    causal_mask,
    combine_masks,
    padding_mask,
    positions_from_attention_mask,
)
from llm_internals.layers.mla import MultiHeadLatentAttention
from llm_internals.layers.moe import MoELayer
from llm_internals.layers.multihead import AttentionCache, MultiHeadAttention
from llm_internals.layers.norm import make_norm
from llm_internals.layers.positional import (
    LearnedPositionalEmbedding,
    SinusoidalPositionalEmbedding,
)
from llm_internals.layers.rope import RotaryEmbedding
from llm_internals.models.config import ModelConfig, mla_layer_config, moe_layer_config
from llm_internals.models.kernel_switches import KernelSwitches
from llm_internals.trace import record


def make_attention(config: ModelConfig, layer_idx: int) -> MultiHeadAttention:
    """The attention layer a config describes: decoder, encoder and cross-attention alike
    (rope_layout matters only where RoPE is applied)."""
    return MultiHeadAttention(
        config.d_model,
        config.n_heads,
        config.n_kv_heads,
        config.head_dim,
        qkv_bias=config.qkv_bias,
        out_bias=config.attn_out_bias,
        qk_norm=config.qk_norm,
        norm_eps=config.norm_eps,
        rope_layout=config.rope_layout,
        use_sdpa=config.attn_impl == "sdpa",
        use_flash=config.attn_impl == "flash",
        layer_idx=layer_idx,
    )


class DecoderBlock(nn.Module):
    """One transformer layer: self-attention and feed-forward, each with a residual connection."""

    def __init__(self, config: ModelConfig, layer_idx: int) -> None:
        super().__init__()
        self.pre_norm = config.norm_position == "pre"
        self.norm1 = make_norm(config.norm, config.d_model, config.norm_eps)
        mla = mla_layer_config(config)
        self.attn = make_attention(config, layer_idx) if mla is None else (
            MultiHeadLatentAttention(mla, layer_idx, use_sdpa=config.attn_impl == "sdpa")
        )  # fmt: skip
        self.norm2 = make_norm(config.norm, config.d_model, config.norm_eps)
        moe = moe_layer_config(config, layer_idx)
        self.ffn = MoELayer(moe) if moe is not None else make_ffn(
            config.ffn, config.d_model, config.d_ff, config.activation, config.mlp_bias
        )  # fmt: skip
        self.dropout = nn.Dropout(config.dropout)

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None,
        rope: tuple[torch.Tensor, torch.Tensor] | None,
        cache: AttentionCache | None,
    ) -> torch.Tensor:
        attend = lambda h: self.attn(h, mask=mask, causal=True, rope=rope, cache=cache)  # noqa: E731
        if self.pre_norm:
            x = x + self.dropout(attend(self.norm1(x)))
            record("residual_after_attention", x)
            x = x + self.dropout(self.ffn(self.norm2(x)))
        else:  # post-norm, as in the original Transformer
            x = self.norm1(x + self.dropout(attend(x)))
            record("residual_after_attention", x)
            x = self.norm2(x + self.dropout(self.ffn(x)))
        return x


class DecoderLM(KernelSwitches, nn.Module):
    """A causal language model: token ids (batch, T) -> next-token logits (batch, T, vocab)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.tok_emb = TokenEmbedding(config.vocab_size, config.d_model)
        self.pos_emb: nn.Module | None = None
        if config.position == "learned":
            self.pos_emb = LearnedPositionalEmbedding(config.max_seq_len, config.d_model)
        elif config.position == "sinusoidal":
            self.pos_emb = SinusoidalPositionalEmbedding(config.max_seq_len, config.d_model)
        mla = mla_layer_config(config)
        if mla is not None and config.position != "rope":
            raise LLMInternalsError(
                f"model config: mla needs position 'rope', got {config.position!r}",
                hint="set position to rope in the model's config.json",
            )
        # MLA rotates only its qk_rope_head_dim channel, in the "half" layout (layers/mla.py).
        rope_dim, rope_layout = (
            (config.head_dim, config.rope_layout) if mla is None else (mla.qk_rope_head_dim, "half")
        )
        self.rope = (
            RotaryEmbedding(rope_dim, config.rope_theta, config.rope_scaling, rope_layout)
            if config.position == "rope"
            else None
        )
        self.dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(DecoderBlock(config, i) for i in range(config.n_layers))
        self.norm_f = make_norm(config.norm, config.d_model, config.norm_eps) if (
            config.norm_position == "pre"
        ) else None  # fmt: skip
        self.lm_head = OutputHead(config.d_model, config.vocab_size)
        self.apply(self._init_weights)
        for name, param in self.named_parameters():  # GPT-2: scale residual projections by depth
            if name.endswith(("o_proj.weight", "down_proj.weight")):
                nn.init.normal_(param, std=0.02 / math.sqrt(2 * config.n_layers))
        if config.tie_embeddings:
            self.lm_head.tie_to(self.tok_emb)
        self.set_fused_ops(config.fused_ops)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    def forward(
        self,
        idx: torch.Tensor,
        positions: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        cache: AttentionCache | None = None,
    ) -> torch.Tensor:
        """Logits for every position.

        idx: (batch, T) integer token ids. positions: (batch or 1, T) position ids; by default
        counted from the cache's past length, or from attention_mask so left padding works.
        attention_mask: (batch, past + T), 1 for real tokens and 0 for padding.
        """
        return self.lm_head(self.hidden_states(idx, positions, attention_mask, cache))

    def hidden_states(
        self,
        idx: torch.Tensor,
        positions: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        cache: AttentionCache | None = None,
    ) -> torch.Tensor:
        """The final (normalized) hidden vectors (batch, T, d_model), before the output head."""
        self._check_ids(idx)
        batch, q_len = idx.shape
        past = cache.past_length() if cache is not None else 0
        k_len = past + q_len
        if attention_mask is not None:
            self._check_attention_mask(attention_mask, batch, k_len)
        positions = self._positions(positions, attention_mask, batch, past, q_len, idx.device)
        mask = self._mask(attention_mask, q_len, k_len, idx.device)

        x = self.tok_emb(idx)
        if self.pos_emb is not None:
            x = x + self.pos_emb(positions)
        x = self.dropout(x)
        rope = self.rope(positions, dtype=x.dtype) if self.rope is not None else None
        record("embedding", x, note="input to the first block")
        for block in self.blocks:
            x = block(x, mask, rope, cache)
            record("block_output", x)
        if self.norm_f is not None:
            x = self.norm_f(x)
        return x

    def _mask(
        self, attention_mask: torch.Tensor | None, q_len: int, k_len: int, device: torch.device
    ) -> torch.Tensor | None:
        """None means "plain causal" (the cheapest path); otherwise the full boolean mask."""
        window = self.config.sliding_window
        use_window = window is not None and k_len > window
        has_padding = attention_mask is not None and not bool(attention_mask.all())
        if not (has_padding or use_window or k_len != q_len):
            return None
        causal = causal_mask(q_len, k_len, window if use_window else None, device=device)
        pads = padding_mask(attention_mask) if has_padding else None
        return combine_masks(causal, pads)

    def _positions(
        self,
        positions: torch.Tensor | None,
        attention_mask: torch.Tensor | None,
        batch: int,
        past: int,
        q_len: int,
        device: torch.device,
    ) -> torch.Tensor:
        if positions is None:
            if attention_mask is not None:
                positions = positions_from_attention_mask(attention_mask)[:, -q_len:]
            else:
                positions = torch.arange(past, past + q_len, device=device)[None, :]
        else:
            if positions.dtype.is_floating_point or positions.dim() != 2 or (
                positions.shape[1] != q_len or positions.shape[0] not in (1, batch)
            ):  # fmt: skip
                raise LLMInternalsError(
                    f"positions must be integer ids of shape ({batch} or 1, {q_len}), got "
                    f"{positions.dtype} {tuple(positions.shape)}"
                )
        if self.rope is not None or self.pos_emb is not None:
            highest = int(positions.max()) if positions.numel() else 0
            if highest >= self.config.max_seq_len or int(positions.min()) < 0:
                raise LLMInternalsError(
                    f"position {highest} is outside the model's context of "
                    f"max_seq_len={self.config.max_seq_len} tokens",
                    hint="shorten the input (or crop it to the last max_seq_len tokens)",
                )
        return positions

    def _check_ids(self, idx: torch.Tensor) -> None:
        if not isinstance(idx, torch.Tensor):
            raise LLMInternalsError(f"token ids must be a torch.Tensor, got {type(idx).__name__}")
        if idx.dtype.is_floating_point or idx.dtype.is_complex or idx.dtype == torch.bool:
            raise LLMInternalsError(
                f"token ids must be an integer tensor, got dtype {idx.dtype}",
                hint="convert with ids.long()",
            )
        if idx.dim() != 2:
            raise LLMInternalsError(
                f"token ids must have shape (batch, seq_len), got {tuple(idx.shape)}",
                hint="add a batch dimension with ids[None]",
            )
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= self.config.vocab_size):
            bad = idx[(idx < 0) | (idx >= self.config.vocab_size)][0].item()
            raise LLMInternalsError(
                f"token id {bad} is out of range for vocab_size={self.config.vocab_size}",
                hint="was the text encoded with this model's tokenizer?",
            )

    @staticmethod
    def _check_attention_mask(attention_mask: torch.Tensor, batch: int, k_len: int) -> None:
        if attention_mask.shape != (batch, k_len):
            raise LLMInternalsError(
                f"attention_mask must have shape (batch, past + seq_len) = ({batch}, {k_len}), "
                f"got {tuple(attention_mask.shape)}"
            )
