"""Scaled dot-product attention, written as its steps (Vaswani et al. 2017, eq. 1):

    Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k) + mask) V

1. scores = Q K^T: how well each query matches each key (a dot product per pair).
2. scaled = scores / sqrt(d_k): dot products of random unit-variance vectors have variance d_k;
   dividing by sqrt(d_k) keeps softmax out of its saturated, one-hot regime.
3. masked: disallowed pairs (future tokens, padding) get -inf, i.e. weight exactly 0.
4. weights = softmax(masked) over the keys: each query's weights sum to 1.
5. output = weights V: each query's output is a weighted average of the value vectors.

Every step is recorded for the explain path. `sdpa_attention` is the fast path through
torch.nn.functional.scaled_dot_product_attention with the same semantics, including the one edge
case: a query with no visible key (a padding query) gets an all-zero output, never NaN.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from llm_internals.layers.softmax import softmax
from llm_internals.trace import record


def scaled_dot_product_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """softmax(q k^T * scale, masked) v for q (..., T, d), k (..., S, d), v (..., S, d_v).

    `mask` is boolean, broadcastable to (..., T, S), True where attending is allowed.
    `scale` defaults to 1/sqrt(d).
    """
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = torch.matmul(q, k.transpose(-2, -1))
    record("scores", scores, note="Q K^T")
    # In-place from here on: autograd does not need the overwritten values, and `record` copies.
    scaled = scores.mul_(scale)
    record("scaled_scores", scaled, note=f"times {scale:.6g} = 1/sqrt(d_k)")
    if mask is not None:
        scaled = scaled.masked_fill_(~mask, float("-inf"))
        record("masked_scores", scaled, note="disallowed pairs set to -inf")
    weights = softmax(scaled, dim=-1)
    record("weights", weights, note="softmax over keys: each row sums to 1")
    output = torch.matmul(weights, v)
    record("output", output, note="weights V")
    return output


def sdpa_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    scale: float | None = None,
    is_causal: bool = False,
) -> torch.Tensor:
    """The same computation through torch's fused kernel (no intermediate steps recorded).

    q (..., H, T, d) may have more heads than k, v (..., H_kv, S, d) (grouped-query attention);
    any number of leading batch dimensions works, as in `scaled_dot_product_attention`.
    `is_causal` (only without `mask`, and only for T == S) lets the kernel skip the mask tensor.
    Values narrower than the keys (MLA, layers/mla.py) are zero-padded to the key width and the
    output cut back: torch's CPU flash kernel needs equal widths, and its math fallback was 8x
    slower (MLA's naive prefill, 768 tokens, 8 heads, widths 48/32: 55 vs 7 ms).
    """
    width = v.shape[-1]
    if width < k.shape[-1]:
        v = F.pad(v, (0, k.shape[-1] - width))
    enable_gqa = q.dim() >= 3 and q.shape[-3] != k.shape[-3]
    if mask is None:
        output = F.scaled_dot_product_attention(
            q, k, v, is_causal=is_causal, scale=scale, enable_gqa=enable_gqa
        )
    else:
        # torch returns NaN for rows with no visible key; open such rows up, then zero them.
        has_key = mask.any(dim=-1, keepdim=True)
        every_row_has_key = bool(has_key.all())
        if not every_row_has_key:
            mask = mask | ~has_key
        output = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, scale=scale, enable_gqa=enable_gqa
        )
        if not every_row_has_key:
            output = output * has_key
    output = output[..., :width]
    record("output", output, note="fused scaled_dot_product_attention")
    return output
