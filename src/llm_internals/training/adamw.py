"""AdamW, written out (matches `torch.optim.AdamW`).

Per parameter tensor, at step t (starting at 1), with gradient g:

    theta <- theta * (1 - lr * weight_decay)          decoupled weight decay (the "W")
    m_t   = beta1 * m_{t-1} + (1 - beta1) * g         first moment: a running mean of g
    v_t   = beta2 * v_{t-1} + (1 - beta2) * g^2       second moment: a running mean of g^2
    m_hat = m_t / (1 - beta1^t),  v_hat = v_t / (1 - beta2^t)   bias correction (m_0 = v_0 = 0)
    theta <- theta - lr * m_hat / (sqrt(v_hat) + eps)

Dividing by sqrt(v_hat) gives every coordinate a step of about lr whatever its gradient's scale.
Weight decay is applied to the weights directly instead of being added to g (Adam + L2), so it
is not rescaled by 1/sqrt(v_hat): that is what "decoupled" means (Loshchilov & Hutter, 2019).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch

from llm_internals.errors import LLMInternalsError


class AdamW(torch.optim.Optimizer):
    """Adam with bias correction and decoupled weight decay."""

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
    ) -> None:
        if lr < 0:
            raise LLMInternalsError(f"AdamW lr must be >= 0, got {lr}")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise LLMInternalsError(f"AdamW betas must each be in [0, 1), got {betas}")
        if eps < 0:
            raise LLMInternalsError(f"AdamW eps must be >= 0, got {eps}")
        if weight_decay < 0:
            raise LLMInternalsError(f"AdamW weight_decay must be >= 0, got {weight_decay}")
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                grad = param.grad
                state = self.state[param]
                if not state:
                    state["step"] = torch.tensor(0.0)
                    state["exp_avg"] = torch.zeros_like(param)
                    state["exp_avg_sq"] = torch.zeros_like(param)
                state["step"] += 1
                t = int(state["step"].item())
                param.mul_(1 - lr * group["weight_decay"])
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m.lerp_(grad, 1 - beta1)  # m + (1 - beta1)(g - m) = beta1 m + (1 - beta1) g
                v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                bias_correction1 = 1 - beta1**t
                bias_correction2 = 1 - beta2**t
                denom = (v.sqrt() / math.sqrt(bias_correction2)).add_(eps)
                param.addcdiv_(m, denom, value=-lr / bias_correction1)
        return loss
