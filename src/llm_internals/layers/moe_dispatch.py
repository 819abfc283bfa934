"""Sending tokens to their experts and combining the answers: three ways, equal results.

For T tokens each routed to k experts with weights w [T, k] and expert ids idx [T, k]:

    y_t = sum_j w[t, j] * Expert_{idx[t, j]}(x_t)

* `dispatch_sorted` (the default): flatten the T*k (token, expert) pairs, sort them by expert
  (stable, so tokens keep their order), run each expert once on its contiguous slice, multiply by
  the weights and scatter-add the rows back to their tokens (index_add_). Each expert does one
  matmul over exactly the tokens that chose it: the compute is k/E of the dense path.
* `dispatch_loop`: the picture in the seed post, token by token and slot by slot. Slow; the
  reference the others are tested against.
* `dispatch_dense`: every expert on every token, weighted by the full [T, E] gate matrix that is
  zero outside the chosen experts. E/k times the compute; no gathers, so it is the easiest to check.

Capacity (Switch / GShard): an expert accepts at most C = ceil(capacity_factor * T * k / E)
pairs. `capacity_keep_mask` marks which pairs fit, first choices of all tokens before second
choices, tokens in order; a dropped pair contributes nothing (the token's residual carries it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

DISPATCH_MODES = ("sorted", "loop", "dense")


def expert_capacity(capacity_factor: float, n_tokens: int, top_k: int, n_experts: int) -> int:
    """C = ceil(capacity_factor * T * k / E): the pairs one expert may take in this batch."""
    return math.ceil(capacity_factor * n_tokens * top_k / n_experts)


def capacity_keep_mask(indices: torch.Tensor, n_experts: int, capacity: int) -> torch.Tensor:
    """Bool [T, k]: True where the (token, slot) pair is within its expert's capacity.

    Priority is slot-major (every token's first choice, then every token's second, ...), so a
    token loses its second expert before another token loses its first.
    """
    slot_major = indices.t().reshape(-1)  # [k*T], slot 0 of all tokens first
    one_hot = nn.functional.one_hot(slot_major, n_experts)
    position = (one_hot.cumsum(dim=0) * one_hot).sum(dim=-1) - 1  # rank within its expert
    return (position < capacity).view(indices.shape[1], indices.shape[0]).t()


def dispatch_sorted(
    x: torch.Tensor,
    experts: Sequence[nn.Module],
    indices: torch.Tensor,
    weights: torch.Tensor,
    keep: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sort the (token, expert) pairs by expert, one call per expert, scatter-add back.
    Pairs where `keep` [T, k] is False (over capacity) are removed before the sort."""
    n_tokens, top_k = indices.shape
    flat_expert = indices.reshape(-1)
    flat_token = torch.arange(n_tokens, device=x.device).repeat_interleave(top_k)
    flat_weight = weights.reshape(-1)
    if keep is not None:
        kept = keep.reshape(-1)
        flat_expert, flat_token, flat_weight = (
            flat_expert[kept],
            flat_token[kept],
            flat_weight[kept],
        )
    order = torch.argsort(flat_expert, stable=True)
    sorted_token = flat_token[order]
    sorted_weight = flat_weight[order]
    counts = torch.bincount(flat_expert, minlength=len(experts)).tolist()
    out = torch.zeros_like(x)
    start = 0
    for expert, count in zip(experts, counts, strict=True):
        if count:
            tokens = sorted_token[start : start + count]
            rows = expert(x[tokens]) * sorted_weight[start : start + count, None].to(x.dtype)
            out = out.index_add(0, tokens, rows)
        start += count
    return out


def dispatch_loop(
    x: torch.Tensor,
    experts: Sequence[nn.Module],
    indices: torch.Tensor,
    weights: torch.Tensor,
    keep: torch.Tensor | None = None,
) -> torch.Tensor:
    """Token by token, slot by slot: y_t = sum_j w[t, j] Expert_{idx[t, j]}(x_t)."""
    rows = []
    for token in range(x.shape[0]):
        row = torch.zeros_like(x[token])
        for slot in range(indices.shape[1]):
            if keep is not None and not keep[token, slot]:
                continue
            expert = experts[int(indices[token, slot])]
            row = row + weights[token, slot].to(x.dtype) * expert(x[token : token + 1])[0]
        rows.append(row)
    return torch.stack(rows) if rows else torch.zeros_like(x)


def dispatch_dense(
    x: torch.Tensor,
    experts: Sequence[nn.Module],
    indices: torch.Tensor,
    weights: torch.Tensor,
    keep: torch.Tensor | None = None,
) -> torch.Tensor:
    """Every expert on every token: y = sum_e G[:, e] * Expert_e(x), G [T, E] zero off the top-k."""
    gate = torch.zeros(x.shape[0], len(experts), dtype=x.dtype, device=x.device)
    if keep is not None:
        weights = weights * keep
    gate = gate.scatter_add(1, indices, weights.to(x.dtype))
    out = torch.zeros_like(x)
    for e, expert in enumerate(experts):
        out = out + gate[:, e : e + 1] * expert(x)
    return out


DISPATCHERS = {"sorted": dispatch_sorted, "loop": dispatch_loop, "dense": dispatch_dense}
