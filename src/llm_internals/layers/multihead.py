"""Multi-head attention with n_kv_heads key/value heads: MHA, GQA and MQA in one module.

    head_h = Attention(x W_q^h, kv W_k^g(h), kv W_v^g(h)),  g(h) = h // (n_heads / n_kv_heads)
    MHA(x) = concat(head_1, ..., head_H) W_o

n_kv_heads == n_heads is classic multi-head attention, n_kv_heads == 1 is multi-query attention,
anything between is grouped-query attention: each K/V head serves a group of query heads, which
shrinks the KV cache by n_heads / n_kv_heads. `kv` defaults to `x` (self-attention); passing the
encoder output gives cross-attention. Optional: biases (GPT-2, BERT, Qwen2's q/k/v), RMS QK-norm
over each head (Qwen3), RoPE on q and k (applied after QK-norm, before the cache).

Attention context. `forward(..., cache=...)` takes an object with this protocol, so the same
module serves training (no cache), simple generation (a contiguous KV cache) and a serving engine
(a paged KV cache):

    class AttentionCache(Protocol):
        def past_length(self) -> int: ...
            # positions already stored before this forward (the model uses it to place new
            # tokens: default positions and the causal offset)
        def update(self, layer_idx: int, k: Tensor, v: Tensor)
                -> tuple[Tensor, Tensor, Tensor | None]: ...
            # k, v: (batch, n_kv_heads, new_tokens, head_dim), RoPE already applied.
            # Store them and return (all_keys, all_values, mask): the keys/values to attend to,
            # shape (batch, n_kv_heads, keys, head_dim), and either None (use the mask the model
            # built: causal over `keys` plus the caller's attention_mask over all keys) or a boolean
            # mask broadcastable to (batch, heads, new_tokens, keys) that replaces it.

A contiguous cache appends along the key axis and returns None; a paged cache gathers each
sequence's blocks and returns its own mask.

Values may be narrower than keys: Multi-head Latent Attention (layers/mla.py) passes its latent
[c_kv ; k_rope] as the keys of one KV head and c_kv, a view of the keys' first d_c features, as
the values; caches built with `latent_value_dim` store the keys only (inference/kv_layout.py).

Optional hook: a cache may instead compute attention itself, for a packed batch in which one row
holds the tokens of several sequences (the serving engine, inference/paged/paged_attention.py):

        def attend(self, layer_idx: int, q: Tensor, k: Tensor, v: Tensor, *, scale: float,
                   use_sdpa: bool) -> Tensor: ...
            # q (batch, n_heads, new_tokens, head_dim), k, v (batch, n_kv_heads, new_tokens,
            # head_dim), RoPE applied; returns the attention output (batch, n_heads, new_tokens,
            # head_dim) before the heads are merged. `update` is not called when `attend` exists.

Only the attention between projections changes; the projections, QK-norm, RoPE and W_o are the
module's own either way.

Attention itself runs one of three ways: the recorded from-scratch steps (layers/attention.py),
torch's fused kernel (`use_sdpa`), or the tiled flash attention (`use_flash`,
layers/flash_attention.py: causal without a mask skips the blocks above the diagonal; a given
mask is applied block by block). A cache with `attend` computes attention itself; a flash model
there takes the from-scratch path (use_sdpa is False).
"""

from __future__ import annotations

import math
from typing import Protocol

import torch
from torch import nn

from llm_internals.layers.attention import scaled_dot_product_attention, sdpa_attention
from llm_internals.layers.flash_attention import flash_attention
from llm_internals.layers.masks import causal_mask
from llm_internals.layers.norm import RMSNorm
from llm_internals.layers.rope import apply_rope
from llm_internals.trace import is_recording, record


class AttentionCache(Protocol):
    """See the module docstring."""

    def past_length(self) -> int: ...

    def update(
        self, layer_idx: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]: ...


SCORES_CHUNK_BYTES = 16 * 2**20
FLASH_BLOCK_Q = FLASH_BLOCK_K = 64  # the flash path's tile: see docs/flash-attention.md


def _attend_in_batch_chunks(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, scale: float
) -> torch.Tensor:
    """The from-scratch attention, a few batch rows at a time.

    The (batch, heads, T, S) score tensor of a whole batch is tens of MB; every step of the
    softmax then streams it through memory (and allocates a fresh one). Rows of up to 16 MB of
    scores stay in cache and reuse freed memory: about 2x faster attention on an idle 2-core
    CPU (34 -> 15 ms for 8 x 9 heads x 256^2), same numbers.
    While recording, the batch runs in one piece so that each step is recorded once.
    """
    batch = q.shape[0]
    row_bytes = q.shape[1] * q.shape[2] * k.shape[2] * q.element_size()
    rows = max(1, SCORES_CHUNK_BYTES // row_bytes)
    if rows >= batch or is_recording():
        return scaled_dot_product_attention(q, k, v, mask=mask, scale=scale)
    out = q.new_empty(*q.shape[:-1], v.shape[-1])
    per_row_mask = mask is not None and mask.dim() == 4 and mask.shape[0] == batch
    for start in range(0, batch, rows):
        part = slice(start, start + rows)
        part_mask = mask[part] if per_row_mask else mask
        out[part] = scaled_dot_product_attention(q[part], k[part], v[part], part_mask, scale)
    return out


class MultiHeadAttention(nn.Module):
    """Project to heads, optionally normalize and rotate q/k, attend, merge heads, project out."""

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        n_kv_heads: int | None = None,
        head_dim: int | None = None,
        *,
        qkv_bias: bool = False,
        out_bias: bool = False,
        qk_norm: bool = False,
        norm_eps: float = 1e-6,
        kv_dim: int | None = None,
        rope_layout: str = "half",
        use_sdpa: bool = False,
        use_flash: bool = False,
        layer_idx: int = 0,
    ) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.n_kv_heads = n_heads if n_kv_heads is None else n_kv_heads
        self.head_dim = d_model // n_heads if head_dim is None else head_dim
        self.n_rep = n_heads // self.n_kv_heads
        self.scale = 1.0 / math.sqrt(self.head_dim)
        self.rope_layout = rope_layout
        self.use_sdpa = use_sdpa
        self.use_flash = use_flash
        self.layer_idx = layer_idx
        kv_dim = d_model if kv_dim is None else kv_dim
        self.q_proj = nn.Linear(d_model, n_heads * self.head_dim, bias=qkv_bias)
        self.k_proj = nn.Linear(kv_dim, self.n_kv_heads * self.head_dim, bias=qkv_bias)
        self.v_proj = nn.Linear(kv_dim, self.n_kv_heads * self.head_dim, bias=qkv_bias)
        self.o_proj = nn.Linear(n_heads * self.head_dim, d_model, bias=out_bias)
        self.q_norm = RMSNorm(self.head_dim, eps=norm_eps) if qk_norm else None
        self.k_norm = RMSNorm(self.head_dim, eps=norm_eps) if qk_norm else None

    def forward(
        self,
        x: torch.Tensor,
        kv: torch.Tensor | None = None,
        *,
        mask: torch.Tensor | None = None,
        causal: bool = False,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        cache: AttentionCache | None = None,
    ) -> torch.Tensor:
        """x (batch, T, d_model) -> (batch, T, d_model).

        `mask` (bool, True = attend) is the full mask when given; otherwise `causal` asks for a
        plain causal mask. `rope` is (cos, sin) of shape (batch, T, head_dim) for the queries'
        positions; keys from `x` share them.
        """
        batch, q_len, _ = x.shape
        kv = x if kv is None else kv
        q = self.q_proj(x).view(batch, q_len, self.n_heads, self.head_dim)
        k = self.k_proj(kv).view(batch, kv.shape[1], self.n_kv_heads, self.head_dim)
        v = self.v_proj(kv).view(batch, kv.shape[1], self.n_kv_heads, self.head_dim)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, heads, T, hd)
        if rope is not None:
            record("q_before_rope", q)
            record("k_before_rope", k)
            cos, sin = rope
            q = apply_rope(q, cos, sin, self.rope_layout)
            k = apply_rope(k, cos, sin, self.rope_layout)
        attend = getattr(cache, "attend", None)
        if attend is not None:  # the cache computes attention (a packed, paged batch)
            record("q", q, note="(batch, heads, queries, head_dim)")
            out = attend(self.layer_idx, q, k, v, scale=self.scale, use_sdpa=self.use_sdpa)
            return self._merge_heads(out, batch, q_len)
        if cache is not None:
            k, v, cache_mask = cache.update(self.layer_idx, k, v)
            if cache_mask is not None:
                mask = cache_mask
        record("q", q, note="(batch, heads, queries, head_dim)")
        record("k", k, note="(batch, kv_heads, keys, head_dim)")
        record("v", v, note="(batch, kv_heads, keys, head_dim)")
        if self.use_flash:  # queries are the last q_len of the keys, as causal_mask(q_len, k_len)
            out = flash_attention(
                q, k, v, causal=mask is None and causal, mask=mask, scale=self.scale,
                block_q=FLASH_BLOCK_Q, block_k=FLASH_BLOCK_K,
            )  # fmt: skip
            return self._merge_heads(out, batch, q_len)
        k_len = k.shape[2]
        if mask is None and causal and (q_len != k_len or not self.use_sdpa):
            mask = causal_mask(q_len, k_len, device=x.device)
        if self.use_sdpa:
            out = sdpa_attention(
                q, k, v, mask=mask, scale=self.scale, is_causal=mask is None and causal
            )
        else:
            if self.n_rep > 1:  # each K/V head serves n_rep consecutive query heads
                k = k.repeat_interleave(self.n_rep, dim=1)
                v = v.repeat_interleave(self.n_rep, dim=1)
            out = _attend_in_batch_chunks(q, k, v, mask, self.scale)
        return self._merge_heads(out, batch, q_len)

    def _merge_heads(self, out: torch.Tensor, batch: int, q_len: int) -> torch.Tensor:
        """(batch, heads, T, head_dim) -> concatenate the heads -> W_o -> (batch, T, d_model)."""
        out = out.transpose(1, 2).reshape(batch, q_len, self.n_heads * self.head_dim)
        out = self.o_proj(out)
        record("attention_output", out, note="heads concatenated, times W_o")
        return out
