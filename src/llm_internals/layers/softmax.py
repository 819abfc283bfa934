"""Numerically stable softmax, the function behind attention weights, cross-entropy and sampling.

    softmax(x)_i = exp(x_i / T) / sum_j exp(x_j / T)

Computed as exp(x_i - m) / sum_j exp(x_j - m) with m = max_j x_j: the result is the same
(the factor exp(-m) cancels) but no exponent exceeds 0, so exp cannot overflow (exp(1000) is inf
in float32 and float64). A row that is entirely -inf (a query with nothing to attend to) would
give 0/0 = NaN; here it gives all zeros, so a fully masked attention row contributes nothing.
"""

from __future__ import annotations

import torch

from llm_internals.errors import LLMInternalsError
from llm_internals.trace import record


def softmax(x: torch.Tensor, dim: int = -1, temperature: float = 1.0) -> torch.Tensor:
    """Softmax of `x / temperature` along `dim`; fully -inf rows map to zeros instead of NaN."""
    if not temperature > 0:
        raise LLMInternalsError(
            f"softmax temperature must be > 0, got {temperature}",
            hint="temperature 0 means greedy decoding: take argmax instead",
        )
    record("logits", x)
    if temperature != 1.0:
        x = x / temperature
        record("tempered", x, note=f"divided by temperature {temperature}")
    row_max = x.amax(dim=dim, keepdim=True)
    # A fully masked row has max -inf, and -inf - (-inf) is NaN: shift such rows by 0 instead.
    row_max = torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max))
    record("max", row_max)
    shifted = x - row_max
    record("shifted", shifted, note="x - max(x): every exponent is <= 0")
    exps = torch.exp(shifted)
    record("exp", exps)
    total = exps.sum(dim=dim, keepdim=True)
    record("sum", total)
    # Dividing masked rows (all exps 0) by 1 keeps them 0 and keeps gradients finite.
    probs = exps / torch.where(total > 0, total, torch.ones_like(total))
    record("probs", probs)
    return probs
