"""The encoder-only model: BERT (Devlin et al. 2018), a masked language model.

    h_0 = LayerNorm(E_tok[x] + E_type[t] + E_pos[p])
    a_l = LayerNorm(h_{l-1} + SelfAttention(h_{l-1}))       (post-norm: normalize after the add)
    h_l = LayerNorm(a_l + FFN(a_l))
    logits = LayerNorm(act(h_L W_t + b_t)) E_tok^T + b     (masked-LM head, decoder tied to E_tok)

Unlike a decoder, every token attends to every other token: there is no causal mask, only the
padding mask. The model sees the whole sentence at once and learns to fill in masked tokens from
both sides, which makes its hidden states good sentence and token features. Token type ids
(segment A / B) let one input hold two sentences.

`EncoderBlock` is also the encoder half of the encoder-decoder model (seq2seq.py).

BERT-only settings live in `config.extra` (see `EncoderSettings`): the number of token types
and whether the masked-LM head exists (a plain `BertModel` checkpoint has none).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from llm_internals.errors import LLMInternalsError
from llm_internals.layers.activations import get_activation
from llm_internals.layers.embedding import OutputHead, TokenEmbedding
from llm_internals.layers.ffn import make_ffn
from llm_internals.layers.masks import padding_mask
from llm_internals.layers.norm import make_norm
from llm_internals.layers.positional import (
    LearnedPositionalEmbedding,
    SinusoidalPositionalEmbedding,
)
from llm_internals.models.config import ModelConfig
from llm_internals.models.decoder import make_attention
from llm_internals.models.kernel_switches import KernelSwitches
from llm_internals.trace import record


@dataclass(frozen=True)
class EncoderSettings:
    """The encoder's fields from `config.extra`: {"type_vocab_size": 2, "mlm_head": true}."""

    type_vocab_size: int = 2
    mlm_head: bool = True

    @classmethod
    def from_config(cls, config: ModelConfig) -> EncoderSettings:
        settings = cls(
            type_vocab_size=config.extra.get("type_vocab_size", 2),
            mlm_head=config.extra.get("mlm_head", True),
        )
        if isinstance(settings.type_vocab_size, bool) or not (
            isinstance(settings.type_vocab_size, int) and settings.type_vocab_size > 0
        ):
            raise LLMInternalsError(
                f"model config: extra.type_vocab_size must be a positive integer, "
                f"got {settings.type_vocab_size!r}"
            )
        if not isinstance(settings.mlm_head, bool):
            raise LLMInternalsError(
                f"model config: extra.mlm_head must be true or false, got {settings.mlm_head!r}"
            )
        if config.position not in ("learned", "sinusoidal"):
            raise LLMInternalsError(
                f"model config: the encoder supports learned or sinusoidal positions, "
                f"got position={config.position!r}"
            )
        return settings


class EncoderBlock(nn.Module):
    """One bidirectional layer: self-attention then feed-forward, each with a residual add.

    Post-norm (BERT, Marian, the 2017 Transformer): x = Norm(x + Sublayer(x)).
    Pre-norm: x = x + Sublayer(Norm(x)).
    """

    def __init__(self, config: ModelConfig, layer_idx: int) -> None:
        super().__init__()
        self.pre_norm = config.norm_position == "pre"
        self.attn = make_attention(config, layer_idx)
        self.norm1 = make_norm(config.norm, config.d_model, config.norm_eps)
        self.ffn = make_ffn(
            config.ffn, config.d_model, config.d_ff, config.activation, config.mlp_bias
        )
        self.norm2 = make_norm(config.norm, config.d_model, config.norm_eps)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """x (batch, T, d_model); mask None or bool (batch, 1, 1, T) with False at padding keys."""
        if self.pre_norm:
            x = x + self.dropout(self.attn(self.norm1(x), mask=mask))
            record("residual_after_attention", x)
            return x + self.dropout(self.ffn(self.norm2(x)))
        x = self.norm1(x + self.dropout(self.attn(x, mask=mask)))
        record("residual_after_attention", x)
        return self.norm2(x + self.dropout(self.ffn(x)))


class EncoderLM(KernelSwitches, nn.Module):
    """A masked language model: token ids (batch, T) -> logits (batch, T, vocab) everywhere."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.settings = EncoderSettings.from_config(config)
        d = config.d_model
        self.tok_emb = TokenEmbedding(config.vocab_size, d)
        self.type_emb = nn.Embedding(self.settings.type_vocab_size, d)
        if config.position == "learned":
            self.pos_emb: nn.Module = LearnedPositionalEmbedding(config.max_seq_len, d)
        else:
            self.pos_emb = SinusoidalPositionalEmbedding(config.max_seq_len, d)
        self.emb_norm = make_norm(config.norm, d, config.norm_eps)
        self.dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(EncoderBlock(config, i) for i in range(config.n_layers))
        self.norm_f = (
            make_norm(config.norm, d, config.norm_eps) if config.norm_position == "pre" else None
        )
        if self.settings.mlm_head:
            self.mlm_dense = nn.Linear(d, d)
            self.mlm_norm = make_norm(config.norm, d, config.norm_eps)
            self.lm_head = OutputHead(d, config.vocab_size)
            self.lm_bias = nn.Parameter(torch.zeros(config.vocab_size))
        self.apply(_init_weights)
        if self.settings.mlm_head and config.tie_embeddings:
            self.lm_head.tie_to(self.tok_emb)
        self.set_fused_ops(config.fused_ops)

    def forward(
        self,
        idx: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Masked-LM logits (batch, T, vocab) for every position (see `hidden_states`)."""
        if not self.settings.mlm_head:
            raise LLMInternalsError(
                "this encoder has no masked-LM head (a BertModel checkpoint)",
                hint="call hidden_states(...) for the encoder's output vectors",
            )
        return self.mlm_logits(self.hidden_states(idx, token_type_ids, attention_mask, positions))

    def mlm_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """The masked-LM head: transform (dense, activation, norm), tied decoder, output bias."""
        transformed = get_activation(self.config.activation, self.config.fused_ops)(
            self.mlm_dense(hidden)
        )
        transformed = self.mlm_norm(transformed)
        record("mlm_transform", transformed, note="dense, activation, LayerNorm")
        logits = self.lm_head(transformed) + self.lm_bias
        record("mlm_logits", logits, note="h E_tok^T + b")
        return logits

    def hidden_states(
        self,
        idx: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The last layer's vectors (batch, T, d_model): HF `BertModel(...).last_hidden_state`.

        idx: (batch, T) token ids. token_type_ids: (batch, T) segment ids, default all 0.
        attention_mask: (batch, T), 1 for real tokens and 0 for padding (padding keys are masked;
        padding queries still get vectors, which callers ignore). positions default to 0..T-1.
        """
        check_token_ids(idx, self.config.vocab_size, "token ids")
        batch, length = idx.shape
        if length > self.config.max_seq_len:
            raise LLMInternalsError(
                f"sequence of {length} tokens is longer than the model's context of "
                f"max_seq_len={self.config.max_seq_len}",
                hint="truncate the input",
            )
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(idx)
        else:
            check_same_shape(token_type_ids, idx, "token_type_ids")
            check_token_ids(token_type_ids, self.settings.type_vocab_size, "token type ids")
        if positions is None:
            positions = torch.arange(length, device=idx.device)[None, :]
        elif (
            positions.dtype.is_floating_point
            or positions.dim() != 2
            or positions.shape[1] != length
        ):
            raise LLMInternalsError(
                f"positions must be integer ids of shape ({batch} or 1, {length}), got "
                f"{positions.dtype} {tuple(positions.shape)}"
            )
        elif positions.numel() and not 0 <= int(positions.min()) <= int(positions.max()) < (
            self.config.max_seq_len
        ):
            raise LLMInternalsError(
                f"positions must lie in [0, {self.config.max_seq_len}), got "
                f"{int(positions.min())}..{int(positions.max())}"
            )
        mask = encoder_padding_mask(attention_mask, idx)

        types = self.type_emb(token_type_ids)
        record("token_type_embedding", types)
        x = self.tok_emb(idx) + types
        x = x + self.pos_emb(positions).to(x.dtype)
        x = self.dropout(self.emb_norm(x))
        record("embedding", x, note="token + type + position, normalized")
        for block in self.blocks:
            x = block(x, mask)
            record("block_output", x)
        if self.norm_f is not None:
            x = self.norm_f(x)
        return x


def _init_weights(module: nn.Module) -> None:
    """BERT's init: N(0, 0.02) for every matrix and table, zero biases."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)
        if getattr(module, "bias", None) is not None:
            nn.init.zeros_(module.bias)


def check_token_ids(ids: torch.Tensor, vocab_size: int, what: str) -> None:
    """A clear error unless `ids` is an integer (batch, T) tensor with values in [0, vocab_size)."""
    if not isinstance(ids, torch.Tensor):
        raise LLMInternalsError(f"{what} must be a torch.Tensor, got {type(ids).__name__}")
    if ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
        raise LLMInternalsError(
            f"{what} must be an integer tensor, got dtype {ids.dtype}",
            hint="convert with ids.long()",
        )
    if ids.dim() != 2:
        raise LLMInternalsError(
            f"{what} must have shape (batch, seq_len), got {tuple(ids.shape)}",
            hint="add a batch dimension with ids[None]",
        )
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= vocab_size):
        bad = ids[(ids < 0) | (ids >= vocab_size)][0].item()
        raise LLMInternalsError(f"{what}: id {bad} is out of range for a table of {vocab_size}")


def check_same_shape(tensor: torch.Tensor, ids: torch.Tensor, what: str) -> None:
    if not isinstance(tensor, torch.Tensor) or tensor.shape != ids.shape:
        shape = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
        raise LLMInternalsError(f"{what} must have shape {tuple(ids.shape)}, got {shape}")


def encoder_padding_mask(
    attention_mask: torch.Tensor | None, ids: torch.Tensor, what: str = "attention_mask"
) -> torch.Tensor | None:
    """(batch, 1, 1, T) bool mask hiding padding keys; None when nothing is padded."""
    if attention_mask is None:
        return None
    check_same_shape(attention_mask, ids, what)
    if bool(attention_mask.all()):
        return None
    return padding_mask(attention_mask)
