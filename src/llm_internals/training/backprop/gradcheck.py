"""Checking hand-written gradients: against autograd, and against finite differences.

Relative error per tensor, ||ours - reference|| / ||reference||, is the yardstick (float64:
below 1e-8). One exception is real: a gradient that is exactly zero in exact arithmetic, such as
the key projection's bias in attention (adding the same q.b_k to every score of a row does not
change its softmax), comes out of both computations as rounding noise near 1e-16, whose relative
error means nothing. Such tensors are compared by absolute size instead (`ZERO_NORM`).

Finite differences need no calculus at all: dL/dtheta_i ~ (L(theta + h e_i) - L(theta - h e_i))
/ 2h, accurate to O(h^2) (about 1e-9 relative with h = 1e-5 in float64), one coordinate per two
forward passes: far too slow to train with, ideal to check with.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

ZERO_NORM = 1e-10


@dataclass(frozen=True)
class GradientCheck:
    name: str
    ours_norm: float
    reference_norm: float
    max_abs_diff: float
    rel_error: float

    @property
    def structurally_zero(self) -> bool:
        return self.reference_norm < ZERO_NORM and self.ours_norm < ZERO_NORM

    def passed(self, tolerance: float = 1e-8) -> bool:
        return self.structurally_zero or self.rel_error < tolerance


def compare_gradients(
    ours: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]
) -> list[GradientCheck]:
    """One GradientCheck per name of `reference` (a KeyError if ours lacks one)."""
    checks = []
    for name, ref in reference.items():
        mine = ours[name]
        diff = (mine - ref).double()
        ref_norm = float(ref.double().norm())
        checks.append(
            GradientCheck(
                name=name,
                ours_norm=float(mine.double().norm()),
                reference_norm=ref_norm,
                max_abs_diff=float(diff.abs().max()),
                rel_error=float(diff.norm()) / ref_norm if ref_norm > 0 else float(diff.norm()),
            )
        )
    return checks


def finite_difference(
    loss_fn: Callable[[], torch.Tensor],
    tensor: torch.Tensor,
    index: tuple[int, ...],
    h: float = 1e-5,
) -> float:
    """Central difference (L(t + h) - L(t - h)) / 2h at one coordinate of `tensor` (restored)."""
    with torch.no_grad():
        original = tensor[index].item()
        tensor[index] = original + h
        plus = float(loss_fn())
        tensor[index] = original - h
        minus = float(loss_fn())
        tensor[index] = original
    return (plus - minus) / (2 * h)
