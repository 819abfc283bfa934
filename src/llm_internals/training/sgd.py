"""Stochastic gradient descent with momentum, written out (matches `torch.optim.SGD`).

    g   = grad + weight_decay * theta                  (coupled L2 weight decay)
    b_t = mu * b_{t-1} + (1 - dampening) * g           (b_1 = g: the buffer starts at the gradient)
    d   = g + mu * b_t  if nesterov  else  b_t
    theta <- theta - lr * d

Momentum averages recent gradients, so steps keep going along directions the gradient agrees on
and cancel along directions where it flips sign. Nesterov looks one momentum step ahead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from llm_internals.errors import LLMInternalsError


class SGD(torch.optim.Optimizer):
    """SGD with optional (Nesterov) momentum and coupled weight decay."""

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict],
        lr: float = 1e-3,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
    ) -> None:
        if lr < 0:
            raise LLMInternalsError(f"SGD lr must be >= 0, got {lr}")
        if momentum < 0:
            raise LLMInternalsError(f"SGD momentum must be >= 0, got {momentum}")
        if weight_decay < 0:
            raise LLMInternalsError(f"SGD weight_decay must be >= 0, got {weight_decay}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise LLMInternalsError(
                "SGD nesterov needs momentum > 0 and dampening 0, "
                f"got momentum={momentum}, dampening={dampening}"
            )
        defaults = dict(
            lr=lr,
            momentum=momentum,
            dampening=dampening,
            weight_decay=weight_decay,
            nesterov=nesterov,
        )
        super().__init__(params, defaults)

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
                if group["weight_decay"] != 0:
                    grad = grad + group["weight_decay"] * param
                if mu != 0:
                    state = self.state[param]
                    buf = state.get("momentum_buffer")
                    if buf is None:
                        buf = grad.clone()
                        state["momentum_buffer"] = buf
                    else:
                        buf.mul_(mu).add_(grad, alpha=1 - group["dampening"])
                    grad = grad + mu * buf if group["nesterov"] else buf
                param.add_(grad, alpha=-lr)
        return loss
