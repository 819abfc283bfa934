"""Causal self-attention forward and backward, head by head, without autograd.

Forward, per head (q, k, v of shape (T, d), scale s = 1 / sqrt(d)):

    S = s q k^T  (masked to -inf above the diagonal),   P = softmax(S),   O = P v

Backward, given dO:

    dv = P^T dO                           (O is linear in v)
    dP = dO v^T                           (and linear in P)
    dS = P * (dP - rowsum(dP * P))        (softmax's Jacobian: diag(p) - p p^T, row by row)
    dq = s dS k,   dk = s dS^T q

Masked entries have P = 0, so dS is 0 there: the future receives no gradient, as it should.
The layer around it: q, k, v are linear projections of x split into heads, and the merged head
outputs go through the output projection; their backward passes are `linear_backward`. x feeds
all three projections, so dx is the sum of the three input gradients.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from llm_internals.layers.masks import causal_mask
from llm_internals.layers.softmax import softmax
from llm_internals.training.backprop.linear import LinearCache, linear_backward, linear_forward


@dataclass
class AttentionCoreCache:
    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    probs: torch.Tensor
    scale: float


def attention_core_forward(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor
) -> tuple[torch.Tensor, AttentionCoreCache]:
    """Causal softmax(s q k^T) v for q, k, v of shape (batch, heads, T, head_dim)."""
    scale = 1.0 / math.sqrt(q.shape[-1])
    scores = (q @ k.transpose(-2, -1)) * scale
    allowed = causal_mask(q.shape[-2], k.shape[-2], device=q.device)
    probs = softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1)
    return probs @ v, AttentionCoreCache(q, k, v, probs, scale)


def attention_core_backward(
    dout: torch.Tensor, cache: AttentionCoreCache
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dq, dk, dv) from d(output)."""
    probs = cache.probs
    dv = probs.transpose(-2, -1) @ dout
    dprobs = dout @ cache.v.transpose(-2, -1)
    dscores = probs * (dprobs - (dprobs * probs).sum(dim=-1, keepdim=True))
    dq = (dscores @ cache.k) * cache.scale
    dk = (dscores.transpose(-2, -1) @ cache.q) * cache.scale
    return dq, dk, dv


@dataclass
class SelfAttentionCache:
    q_proj: LinearCache
    k_proj: LinearCache
    v_proj: LinearCache
    o_proj: LinearCache
    core: AttentionCoreCache
    n_heads: int


def _split_heads(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    batch, seq, width = x.shape
    return x.view(batch, seq, n_heads, width // n_heads).transpose(1, 2)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    batch, heads, seq, head_dim = x.shape
    return x.transpose(1, 2).reshape(batch, seq, heads * head_dim)


def self_attention_forward(
    x: torch.Tensor, params: dict[str, torch.Tensor | None], n_heads: int
) -> tuple[torch.Tensor, SelfAttentionCache]:
    """Multi-head causal self-attention of x (batch, T, d_model).

    `params` holds q_proj/k_proj/v_proj/o_proj ".weight" and ".bias" (bias may be None).
    """
    q, q_cache = linear_forward(x, params["q_proj.weight"], params.get("q_proj.bias"))
    k, k_cache = linear_forward(x, params["k_proj.weight"], params.get("k_proj.bias"))
    v, v_cache = linear_forward(x, params["v_proj.weight"], params.get("v_proj.bias"))
    heads, core = attention_core_forward(
        _split_heads(q, n_heads), _split_heads(k, n_heads), _split_heads(v, n_heads)
    )
    out, o_cache = linear_forward(
        _merge_heads(heads), params["o_proj.weight"], params.get("o_proj.bias")
    )
    return out, SelfAttentionCache(q_cache, k_cache, v_cache, o_cache, core, n_heads)


def self_attention_backward(
    dout: torch.Tensor, cache: SelfAttentionCache
) -> tuple[torch.Tensor, dict[str, torch.Tensor | None]]:
    """(dL/dx, gradients keyed like `params`) from dL/d(output)."""
    grads: dict[str, torch.Tensor | None] = {}
    dmerged, grads["o_proj.weight"], grads["o_proj.bias"] = linear_backward(dout, cache.o_proj)
    dq, dk, dv = attention_core_backward(_split_heads(dmerged, cache.n_heads), cache.core)
    dx = torch.zeros_like(cache.q_proj.x)
    for name, dheads, proj in (
        ("q_proj", dq, cache.q_proj),
        ("k_proj", dk, cache.k_proj),
        ("v_proj", dv, cache.v_proj),
    ):
        dx_part, grads[f"{name}.weight"], grads[f"{name}.bias"] = linear_backward(
            _merge_heads(dheads), proj
        )
        dx = dx + dx_part
    return dx, grads
