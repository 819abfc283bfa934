"""The truncation filters of sampling: which tokens stay candidates (top-k, top-p, min-p).

Each takes (batch, vocab) logits and a per-row parameter (a scalar is broadcast) and returns a
boolean "kept" mask; `Sampler` (sampling.py) applies them in HF's order, top-k then top-p then
min-p, masking the dropped tokens to -inf between them. Ties are kept together, so no result
depends on how a sort orders equal values. Steps are recorded as "sampling.<name>_..." for the
explain path.
"""

from __future__ import annotations

import torch

from llm_internals.layers.softmax import softmax
from llm_internals.trace import is_recording, record


def _per_row(values: torch.Tensor | float | int, logits: torch.Tensor) -> torch.Tensor:
    """A parameter as a (batch, 1) column matching logits (a scalar is broadcast)."""
    column = torch.as_tensor(values, device=logits.device)
    return column.reshape(-1, 1).expand(logits.shape[0], 1)


def top_k_mask(logits: torch.Tensor, k: torch.Tensor | int) -> torch.Tensor:
    """Tokens kept by top-k: logit >= the k-th largest logit of the row (k = 0 keeps all).

    Tokens tied with the k-th are all kept, as in HF's TopKLogitsWarper, so the result never
    depends on how a sort orders equal values.
    """
    vocab = logits.shape[-1]
    k = _per_row(k, logits).long()
    k = torch.where(k > 0, k.clamp(max=vocab), torch.full_like(k, vocab))
    largest = logits.topk(int(k.max()), dim=-1).values  # sorted, largest first
    kth_largest = largest.gather(-1, k - 1)
    keep = (logits >= kth_largest) & (logits > float("-inf"))
    record("sampling.top_k_threshold", kth_largest, note="the k-th largest logit of each row")
    return keep


def top_p_mask(logits: torch.Tensor, p: torch.Tensor | float) -> torch.Tensor:
    """Tokens kept by top-p (nucleus): the smallest most-likely set whose mass reaches p.

    Sorted by probability, a token is kept when the mass of the tokens before it is still below
    p; so the most likely token is always kept and p = 1 keeps every token with nonzero
    probability. Tokens tied with the least likely kept token are kept too (HF keeps whichever
    of them its sort happens to put first).
    """
    p = _per_row(p, logits).to(logits.dtype)
    probs = softmax(logits, dim=-1)
    if is_recording():  # the full list, ties in vocabulary order, for the lesson to show
        sorted_probs, order = probs.sort(dim=-1, descending=True, stable=True)
    else:
        # Only tokens with nonzero probability can be kept, so after top-k only the few
        # survivors need sorting: topk(m) is O(vocab), a full sort O(vocab log vocab). The kept
        # set does not depend on how ties are ordered.
        most = int((probs > 0).sum(dim=-1).max())
        sorted_probs, order = probs.topk(most, dim=-1)
    mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs
    # The most likely token is always kept (the nucleus of any p > 0 holds it), also when p is
    # too small for float32 (1e-300 rounds to 0) or rounding makes mass_before positive.
    in_nucleus = (
        (mass_before < p) | (torch.arange(sorted_probs.shape[-1], device=p.device) == 0)
    ) & (sorted_probs > 0)
    smallest_kept = torch.where(in_nucleus, sorted_probs, torch.ones_like(sorted_probs)).amin(
        dim=-1, keepdim=True
    )
    if is_recording():
        record("sampling.top_p_order", order, note="token ids, most likely first (ties: lower id)")
        record("sampling.top_p_sorted_probs", sorted_probs, note="probabilities, largest first")
        record("sampling.top_p_mass_before", mass_before, note="mass of the tokens ranked above")
    return (probs >= smallest_kept) & (probs > 0)


def min_p_mask(logits: torch.Tensor, min_p: torch.Tensor | float) -> torch.Tensor:
    """Tokens kept by min-p: probability >= min_p * (largest probability of the row)."""
    min_p = _per_row(min_p, logits).to(logits.dtype)
    probs = softmax(logits, dim=-1)
    threshold = min_p * probs.amax(dim=-1, keepdim=True)
    record("sampling.min_p_threshold", threshold, note="min_p * max probability")
    return (probs >= threshold) & (probs > 0)
