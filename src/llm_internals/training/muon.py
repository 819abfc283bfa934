"""Muon: momentum, then orthogonalize the update of each hidden weight matrix (matches
`torch.optim.Muon`).

Per 2D parameter W with gradient G, momentum mu, at each step:

    B  <- mu B + (1 - mu) G                     momentum buffer (an exponential moving average)
    U  =  (1 - mu) G + mu B  if nesterov else B  (Nesterov: look one momentum step ahead)
    O  =  NewtonSchulz5(U) ~ U's "orthogonal part": U = P S Q^T  ->  O ~ P Q^T
    W  <- W (1 - lr weight_decay) - lr * sqrt(max(1, rows / cols)) * O

Why: a gradient matrix of a hidden layer is typically dominated by a few directions (a few
huge singular values). Replacing every singular value by about 1 makes the update move all
directions by the same amount, so rare but useful directions are not drowned out. Computing
P Q^T with an SVD would be slow; the quintic Newton-Schulz iteration

    X <- a X + (b A + c A^2) X,   A = X X^T,   (a, b, c) = (3.4445, -4.7750, 2.0315)

pushes every singular value of X (after scaling X so they are all <= 1) towards ~1 in five
matrix-multiply-only steps, cheap in bfloat16. It acts on singular values as the polynomial
s -> a s + b s^3 + c s^5, whose steep slope at 0 lifts small values fast. It does not converge
to exactly 1 but leaves the values spread around it (about 0.7 to 1.05 for singular values that
spanned a factor of 100), which trains as well as exactly 1 in practice.

Only 2D weights of hidden layers are orthogonalized. Embeddings are lookups (a row only gets
gradient when its token appears, so "all directions equally" is meaningless), the output head
maps to logits where per-class scale matters, and vectors (norm gains, biases) have no singular
values: those are trained by AdamW (`MuonWithAdamW`, `split_params_by_role`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch

from llm_internals.errors import LLMInternalsError
from llm_internals.trace import record

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
NS_STEPS = 5
NS_EPS = 1e-7


def newton_schulz(
    matrix: torch.Tensor,
    steps: int = NS_STEPS,
    coefficients: tuple[float, float, float] = NS_COEFFICIENTS,
    eps: float = NS_EPS,
    dtype: torch.dtype = torch.bfloat16,
) -> torch.Tensor:
    """Approximate the orthogonal factor P Q^T of `matrix` = P S Q^T (returned in `dtype`).

    The matrix is first divided by its Frobenius norm (>= the largest singular value, so all
    singular values become <= 1). A tall matrix is transposed so that A = X X^T is the smaller
    Gram matrix. Records "ns_normalized" and one "ns_iterate" per step.
    """
    if matrix.ndim != 2:
        raise LLMInternalsError(
            f"newton_schulz needs a 2D matrix, got shape {tuple(matrix.shape)}",
            hint="Muon orthogonalizes weight matrices only; train other tensors with AdamW",
        )
    a, b, c = coefficients
    x = matrix.to(dtype)
    tall = matrix.shape[0] > matrix.shape[1]
    if tall:
        x = x.T
    x = x / x.norm().clamp(min=eps)
    record("ns_normalized", x.T if tall else x, note="divided by its Frobenius norm")
    for _ in range(steps):
        gram = x @ x.T
        # addmm(input, m1, m2, beta, alpha) = beta * input + alpha * m1 @ m2, fused as in torch.
        poly = torch.addmm(gram, gram, gram, beta=b, alpha=c)  # b A + c A^2
        x = torch.addmm(x, poly, x, beta=a)  # a X + (b A + c A^2) X
        record("ns_iterate", x.T if tall else x)
    return x.T if tall else x


def muon_lr_scale(shape: torch.Size | tuple[int, ...], adjust_lr_fn: str | None = None) -> float:
    """Learning-rate multiplier for a rows x cols update, so rectangular updates have equal RMS.

    "original" (Keller Jordan's): sqrt(max(1, rows / cols)). "match_rms_adamw" (Moonshot's):
    0.2 sqrt(max(rows, cols)), which lets Muon reuse AdamW's learning rate and weight decay.
    """
    rows, cols = shape[0], shape[1]
    if adjust_lr_fn in (None, "original"):
        return math.sqrt(max(1.0, rows / cols))
    if adjust_lr_fn == "match_rms_adamw":
        return 0.2 * math.sqrt(max(rows, cols))
    raise LLMInternalsError(
        f"unknown Muon adjust_lr_fn {adjust_lr_fn!r}", hint="use 'original' or 'match_rms_adamw'"
    )


class Muon(torch.optim.Optimizer):
    """Momentum + Newton-Schulz orthogonalized updates, for 2D hidden weight matrices only."""

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict],
        lr: float = 1e-3,
        weight_decay: float = 0.1,
        momentum: float = 0.95,
        nesterov: bool = True,
        ns_coefficients: tuple[float, float, float] = NS_COEFFICIENTS,
        eps: float = NS_EPS,
        ns_steps: int = NS_STEPS,
        adjust_lr_fn: str | None = None,
    ) -> None:
        if lr < 0:
            raise LLMInternalsError(f"Muon lr must be >= 0, got {lr}")
        if momentum < 0:
            raise LLMInternalsError(f"Muon momentum must be >= 0, got {momentum}")
        if weight_decay < 0:
            raise LLMInternalsError(f"Muon weight_decay must be >= 0, got {weight_decay}")
        muon_lr_scale((1, 1), adjust_lr_fn)  # validates the name
        defaults = dict(
            lr=lr,
            weight_decay=weight_decay,
            momentum=momentum,
            nesterov=nesterov,
            ns_coefficients=tuple(ns_coefficients),
            eps=eps,
            ns_steps=ns_steps,
            adjust_lr_fn=adjust_lr_fn,
        )
        super().__init__(params, defaults)
        for group in self.param_groups:
            for p in group["params"]:
                if p.ndim != 2:
                    raise LLMInternalsError(
                        f"Muon only trains 2D weight matrices, got a parameter of shape "
                        f"{tuple(p.shape)}",
                        hint="use split_params_by_role and MuonWithAdamW",
                    )

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, mu = group["lr"], group["momentum"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                grad = param.grad
                state = self.state[param]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(grad)
                buf = state["momentum_buffer"]
                buf.lerp_(grad, 1 - mu)  # buf + (1 - mu)(g - buf) = mu buf + (1 - mu) g
                update = grad.lerp(buf, mu) if group["nesterov"] else buf
                ortho = newton_schulz(
                    update, group["ns_steps"], group["ns_coefficients"], group["eps"]
                )
                param.mul_(1 - lr * group["weight_decay"])
                scaled_lr = lr * muon_lr_scale(param.shape, group["adjust_lr_fn"])
                param.add_(ortho.to(param.dtype), alpha=-scaled_lr)
        return loss
