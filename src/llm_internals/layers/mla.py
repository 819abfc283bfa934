"""Multi-head Latent Attention (MLA), the attention of DeepSeek-V2 and V3.

Keys and values are not projected from the hidden state directly but from a small latent that is
the only thing the KV cache keeps (H heads, d_c = kv_lora_rank, d_r = qk_rope_head_dim):

    [c_kv ; k_rope] = W_DKV x                  c_kv: d_c values, k_rope: d_r values
    c_kv            = RMSNorm(c_kv)            <- cached
    k_rope          = RoPE(k_rope)             <- cached, ONE rope key shared by all H heads
    [k_nope_i ; v_i] = W_UKV_i c_kv            per head i, rebuilt from the latent
    q               = W_UQ RMSNorm(W_DQ x)     (or W_Q x when q_lora_rank is None)
    q_i             = [q_nope_i ; RoPE(q_rope_i)]
    o_i             = softmax((q_nope_i . k_nope_i + q_rope_i . k_rope) / sqrt(d_nope + d_r)) v_i

The cache holds d_c + d_r values per token per layer (512 + 64 = 576 for DeepSeek-V3) instead of
2 * H * head_dim for multi-head attention (2 * 128 * 128 = 32,768).

RoPE sits in its own "decoupled" channel because a position-dependent rotation between W_UQ and
W_UK would forbid folding them together. Without it,
q_nope_i . k_nope_i = (W_UK_i^T q_nope_i) . c_kv, so the "absorbed" mode attends in the latent
space and never expands keys and values:

    scores_i = (W_UK_i^T q_nope_i) . c_kv + q_rope_i . k_rope
    o_i      = W_UV_i (softmax(scores_i) c_kv)

The "naive" mode expands per-head keys and values as transformers' DeepseekV3Attention does; both
modes give the same output (tests: fp64 to 1e-12).

RoPE layout: DeepSeek's checkpoints rotate interleaved pairs (x0, x1), (x2, x3), ...
(`rope_interleave=True`, the transformers default). Like transformers we first reorder each rope
vector to (evens, odds) and then rotate halves, so cached rope keys match HF's tensor for tensor.
YaRN (rope_scaling and its mscale^2 factor on the softmax scale) is not implemented here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from llm_internals.errors import LLMInternalsError
from llm_internals.layers.norm import RMSNorm
from llm_internals.layers.rope import RotaryEmbedding, apply_rope
from llm_internals.trace import record

ATTENTION_MODES = ("naive", "absorbed")


@dataclass(frozen=True)
class MLAConfig:
    """The attention fields of a DeepseekV3Config (same names), checked when built."""

    hidden_size: int
    num_attention_heads: int
    kv_lora_rank: int
    qk_nope_head_dim: int
    qk_rope_head_dim: int
    v_head_dim: int
    q_lora_rank: int | None = None  # None: q = W_Q x, no query compression (DeepSeek-V2-Lite)
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_interleave: bool = True

    def __post_init__(self) -> None:
        for field in (
            "hidden_size",
            "num_attention_heads",
            "kv_lora_rank",
            "qk_nope_head_dim",
            "qk_rope_head_dim",
            "v_head_dim",
        ):
            _check_positive(field, getattr(self, field))
        if self.q_lora_rank is not None:
            _check_positive("q_lora_rank", self.q_lora_rank)
        if self.qk_rope_head_dim % 2:
            raise LLMInternalsError(
                f"MLA config: qk_rope_head_dim = {self.qk_rope_head_dim} is odd; "
                "RoPE rotates pairs of features",
                hint="fix qk_rope_head_dim in the model's config.json",
            )
        for field in ("kv_lora_rank", "q_lora_rank"):
            rank = getattr(self, field)
            if rank is not None and rank > self.hidden_size:
                raise LLMInternalsError(
                    f"MLA config: {field} = {rank} is larger than hidden_size = "
                    f"{self.hidden_size}; a latent wider than the input compresses nothing",
                    hint=f"fix {field} in the model's config.json",
                )

    @property
    def qk_head_dim(self) -> int:
        """Query/key width per head: the position-free part plus the rope part."""
        return self.qk_nope_head_dim + self.qk_rope_head_dim


def _check_positive(field: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise LLMInternalsError(
            f"MLA config: {field} = {value!r} must be a positive integer",
            hint=f"fix {field} in the model's config.json",
        )


def kv_values_per_token(config: MLAConfig) -> int:
    """Values MLA caches per token per layer: the latent plus the shared rope key, d_c + d_r.
    Multi-head attention caches 2 * heads * head_dim (a key and a value per head)."""
    return config.kv_lora_rank + config.qk_rope_head_dim


def interleaved_to_halves(x: torch.Tensor) -> torch.Tensor:
    """(x0, x1, x2, x3, ...) -> (x0, x2, ..., x1, x3, ...) on the last axis: the interleaved pairs
    become the (i, i + d/2) pairs that `apply_rope`'s "half" layout rotates (as HF does)."""
    return torch.cat((x[..., 0::2], x[..., 1::2]), dim=-1)


class MultiHeadLatentAttention(nn.Module):
    """Causal MLA with the parameter names of transformers' DeepseekV3Attention (no biases)."""

    def __init__(self, config: MLAConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        heads = c.num_attention_heads
        if c.q_lora_rank is None:
            self.q_proj = nn.Linear(c.hidden_size, heads * c.qk_head_dim, bias=False)
        else:
            self.q_a_proj = nn.Linear(c.hidden_size, c.q_lora_rank, bias=False)
            self.q_a_layernorm = RMSNorm(c.q_lora_rank, eps=c.rms_norm_eps)
            self.q_b_proj = nn.Linear(c.q_lora_rank, heads * c.qk_head_dim, bias=False)
        self.kv_a_proj_with_mqa = nn.Linear(
            c.hidden_size, c.kv_lora_rank + c.qk_rope_head_dim, bias=False
        )
        self.kv_a_layernorm = RMSNorm(c.kv_lora_rank, eps=c.rms_norm_eps)
        self.kv_b_proj = nn.Linear(
            c.kv_lora_rank, heads * (c.qk_nope_head_dim + c.v_head_dim), bias=False
        )
        self.o_proj = nn.Linear(heads * c.v_head_dim, c.hidden_size, bias=False)
        self.rotary = RotaryEmbedding(c.qk_rope_head_dim, theta=c.rope_theta, layout="half")
        self.scale = 1.0 / math.sqrt(c.qk_head_dim)

    def _rope(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        if self.config.rope_interleave:
            x = interleaved_to_halves(x)
        return apply_rope(x, cos, sin, layout="half")

    def forward(
        self,
        x: torch.Tensor,
        past: tuple[torch.Tensor, torch.Tensor] | None = None,
        positions: torch.Tensor | None = None,
        mode: str = "naive",
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Attend x (batch, seq, hidden) causally to the cached tokens `past` and to itself.

        `past` = (c_kv (batch, past_len, kv_lora_rank), k_rope (batch, past_len, qk_rope_head_dim)),
        as returned by the previous call. Positions default to past_len, past_len + 1, ...
        Returns the output (batch, seq, hidden) and the cache including the new tokens.
        """
        if mode not in ATTENTION_MODES:
            raise ValueError(f"unknown MLA mode {mode!r}; choose from {ATTENTION_MODES}")
        c = self.config
        batch, seq, _ = x.shape
        past_len = 0 if past is None else past[0].shape[1]
        if positions is None:
            positions = torch.arange(past_len, past_len + seq, device=x.device)
        cos, sin = self.rotary(positions, dtype=x.dtype)

        if c.q_lora_rank is None:
            q = self.q_proj(x)
        else:
            q = self.q_b_proj(self.q_a_layernorm(self.q_a_proj(x)))
        q = q.view(batch, seq, c.num_attention_heads, c.qk_head_dim).transpose(1, 2)
        q_nope, q_rope = q.split([c.qk_nope_head_dim, c.qk_rope_head_dim], dim=-1)
        q_rope = self._rope(q_rope, cos, sin)  # (batch, heads, seq, d_r)

        c_kv, k_rope = self.kv_a_proj_with_mqa(x).split([c.kv_lora_rank, c.qk_rope_head_dim], -1)
        c_kv = self.kv_a_layernorm(c_kv)  # normalised before caching
        k_rope = self._rope(k_rope, cos, sin)  # (batch, seq, d_r), one for all heads
        if past is not None:
            c_kv = torch.cat((past[0], c_kv), dim=1)
            k_rope = torch.cat((past[1], k_rope), dim=1)
        record("mla_latent", c_kv, note="normalised KV latent c_kv, the cached part")

        total = c_kv.shape[1]
        # Query i (absolute position past_len + i) sees keys 0 .. past_len + i.
        future = torch.ones(seq, total, dtype=torch.bool, device=x.device).triu(past_len + 1)
        attend = self._naive if mode == "naive" else self._absorbed
        out = attend(q_nope, q_rope, c_kv, k_rope, future)  # (batch, heads, seq, d_v)
        out = out.transpose(1, 2).reshape(batch, seq, c.num_attention_heads * c.v_head_dim)
        return self.o_proj(out), (c_kv, k_rope)

    def _softmax(self, scores: torch.Tensor, future: torch.Tensor) -> torch.Tensor:
        scores = scores.masked_fill(future, float("-inf"))
        wide = torch.promote_types(scores.dtype, torch.float32)  # fp16/bf16 softmax in fp32
        return torch.softmax(scores.to(wide), dim=-1).to(scores.dtype)

    def _naive(self, q_nope, q_rope, c_kv, k_rope, future) -> torch.Tensor:
        """Expand per-head keys [k_nope_i ; k_rope] and values v_i from the latent, then attend."""
        c = self.config
        batch, total, _ = c_kv.shape
        kv = self.kv_b_proj(c_kv).view(batch, total, c.num_attention_heads, -1).transpose(1, 2)
        k_nope, v = kv.split([c.qk_nope_head_dim, c.v_head_dim], dim=-1)
        k_rope = k_rope[:, None].expand(-1, c.num_attention_heads, -1, -1)
        q = torch.cat((q_nope, q_rope), dim=-1)
        k = torch.cat((k_nope, k_rope), dim=-1)
        probs = self._softmax(q @ k.transpose(-1, -2) * self.scale, future)
        return probs @ v

    def _absorbed(self, q_nope, q_rope, c_kv, k_rope, future) -> torch.Tensor:
        """Fold W_UK into the query and W_UV after the attention; attend against c_kv itself."""
        c = self.config
        w = self.kv_b_proj.weight.view(c.num_attention_heads, -1, c.kv_lora_rank)
        w_uk, w_uv = w.split([c.qk_nope_head_dim, c.v_head_dim], dim=1)  # rows per head: [k | v]
        q_latent = torch.einsum("bhsd,hdc->bhsc", q_nope, w_uk)
        scores = torch.einsum("bhsc,btc->bhst", q_latent, c_kv)
        scores = scores + torch.einsum("bhsr,btr->bhst", q_rope, k_rope)
        probs = self._softmax(scores * self.scale, future)
        out_latent = torch.einsum("bhst,btc->bhsc", probs, c_kv)
        return torch.einsum("bhsc,hdc->bhsd", out_latent, w_uv)
