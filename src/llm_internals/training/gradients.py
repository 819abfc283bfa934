"""Gradient clipping by global norm, and gradient accumulation over micro-batches.

Clipping: treat all gradients as one long vector g. If its norm exceeds max_norm, scale every
gradient by max_norm / (||g|| + 1e-6) (the same 1e-6 as `torch.nn.utils.clip_grad_norm_`), so
the step keeps its direction but one bad batch cannot make it huge.

    ||g|| = sqrt(sum_over_tensors ||g_i||^2)

Accumulation: a batch too big for memory is split into k micro-batches. Since the loss is a
mean, grad(mean over the batch) = (1/k) sum_j grad(mean over micro-batch j) when micro-batches
are equal in size, so backpropagating loss_j / k for each one and then stepping once gives the
gradient of the whole batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch

from llm_internals.errors import LLMInternalsError


def global_grad_norm(params: Iterable[torch.Tensor]) -> torch.Tensor:
    """sqrt(sum of squares) over every gradient of `params` (those without .grad are skipped)."""
    norms = [p.grad.detach().norm(2) for p in params if p.grad is not None]
    if not norms:
        return torch.tensor(0.0)
    return torch.stack(norms).norm(2)


def clip_grad_norm(params: Iterable[torch.Tensor], max_norm: float) -> torch.Tensor:
    """Scale gradients in place so their global norm is at most `max_norm`; return the norm
    before clipping (as `torch.nn.utils.clip_grad_norm_` does)."""
    if max_norm <= 0:
        raise LLMInternalsError(f"clip_grad_norm max_norm must be > 0, got {max_norm}")
    params = [p for p in params if p.grad is not None]
    total = global_grad_norm(params)
    scale = (max_norm / (total + 1e-6)).clamp(max=1.0)
    for p in params:
        p.grad.detach().mul_(scale.to(p.grad.dtype))
    return total


def accumulate_gradients(
    micro_batches: Sequence[object], compute_loss: Callable[[object], torch.Tensor]
) -> float:
    """Backpropagate the mean loss over equal-sized `micro_batches`; return that mean loss.

    Each micro-batch's loss is divided by the number of micro-batches before `backward()`, so
    the accumulated .grad equals the gradient of the full batch. Gradients add to whatever .grad
    holds: zero them before the first micro-batch.
    """
    if len(micro_batches) == 0:
        raise LLMInternalsError("accumulate_gradients got no micro-batches")
    total = 0.0
    for batch in micro_batches:
        loss = compute_loss(batch) / len(micro_batches)
        loss.backward()
        total += float(loss.detach())
    return total
