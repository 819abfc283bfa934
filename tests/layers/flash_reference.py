"""The live references for the flash-attention tests: the materialised formula (autograd gives
its gradients) and random inputs. Written independently of the tiled code: the full N_q x N_k
score matrix, torch.softmax, torch.logsumexp, K/V heads repeated for GQA."""

from __future__ import annotations

import math

import torch

from llm_internals.layers.masks import causal_mask


def materialised(q, k, v, *, causal=False, mask=None, scale=None):
    """(softmax(q k^T * scale + mask) v, logsumexp of the masked scores); rows without a
    visible key give output 0 and L = -inf."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    if q.dim() >= 3 and q.shape[-3] != k.shape[-3]:
        group = q.shape[-3] // k.shape[-3]
        k, v = k.repeat_interleave(group, dim=-3), v.repeat_interleave(group, dim=-3)
    scores = q @ k.transpose(-1, -2) * scale
    allowed = torch.ones(scores.shape, dtype=torch.bool, device=q.device)
    if causal:
        allowed = allowed & causal_mask(q.shape[-2], k.shape[-2], device=q.device)
    if mask is not None:
        allowed = allowed & mask
    has_key = allowed.any(dim=-1, keepdim=True)
    lse = torch.logsumexp(scores.masked_fill(~allowed, float("-inf")), dim=-1)
    # Rows with no key: softmax over the unmasked row, then zeroed (no NaN, zero gradient).
    weights = torch.softmax(scores.masked_fill(~allowed & has_key, float("-inf")), dim=-1)
    return (weights @ v) * has_key, lse


def random_qkv(shape_q, shape_k, d_v=None, dtype=torch.float64, seed=0, device="cpu"):
    """q, k, v with requires_grad (v's last dim d_v, default k's)."""
    g = torch.Generator().manual_seed(seed)
    d_v = shape_k[-1] if d_v is None else d_v
    q = torch.randn(shape_q, generator=g, dtype=torch.float64)
    k = torch.randn(shape_k, generator=g, dtype=torch.float64)
    v = torch.randn((*shape_k[:-1], d_v), generator=g, dtype=torch.float64)
    return [x.to(device=device, dtype=dtype).requires_grad_() for x in (q, k, v)]


def rel_err(ours: torch.Tensor, ref: torch.Tensor) -> float:
    """max |ours - ref| / max(max |ref|, 1). The inputs are unit normal, so outputs and gradients
    are of order 1; the floor of 1 keeps a gradient that is exactly 0 in theory (a query with a
    single visible key has dQ = 0) from turning rounding noise of 1e-17 into a huge ratio."""
    ours, ref = ours.double(), ref.double()
    return ((ours - ref).abs().max() / ref.abs().max().clamp_min(1.0)).item()
