"""Learning-rate schedule: linear warmup, then cosine decay to a floor.

    step < warmup:             lr = max_lr * (step + 1) / warmup     (default: the first
                                                                   step already moves)
                               lr = max_lr * step / warmup           (from_zero: lr 0 at step 0,
                                                                   max_lr at step == warmup)
    warmup <= step <= decay:   lr = min_lr + (max_lr - min_lr) * (1 + cos(pi * p)) / 2,
                               p = (step - warmup) / (decay - warmup)
    step > decay:              lr = min_lr

Warmup: at the start Adam's second-moment estimates are poor and the weights random, so full
size steps can throw the model somewhere it never recovers from; ramping up avoids that.
Cosine decay: large steps early to move fast, small steps late to settle into a minimum.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from llm_internals.errors import LLMInternalsError


@dataclass(frozen=True)
class WarmupCosine:
    """lr(step) for linear warmup over `warmup_steps` then cosine decay until `decay_steps`.

    from_zero picks the warmup that starts at 0 (as in many course implementations); the
    default reaches max_lr one step earlier, at step warmup_steps - 1 (as nanoGPT does).
    """

    max_lr: float
    min_lr: float
    warmup_steps: int
    decay_steps: int
    from_zero: bool = False

    def __post_init__(self) -> None:
        if not (math.isfinite(self.max_lr) and 0 <= self.min_lr <= self.max_lr):
            raise LLMInternalsError(
                f"schedule needs 0 <= min_lr <= max_lr < inf, got min_lr={self.min_lr}, "
                f"max_lr={self.max_lr}"
            )
        if self.warmup_steps < 0 or self.decay_steps < self.warmup_steps:
            raise LLMInternalsError(
                f"schedule needs 0 <= warmup_steps <= decay_steps, got "
                f"warmup_steps={self.warmup_steps}, decay_steps={self.decay_steps}"
            )

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.max_lr * (step + (0 if self.from_zero else 1)) / self.warmup_steps
        if step >= self.decay_steps:
            return self.min_lr if self.decay_steps > self.warmup_steps else self.max_lr
        progress = (step - self.warmup_steps) / (self.decay_steps - self.warmup_steps)
        return self.min_lr + (self.max_lr - self.min_lr) * 0.5 * (
            1.0 + math.cos(math.pi * progress)
        )

    def factor(self, step: int) -> float:
        """lr(step) / max_lr: the multiplier to apply to groups with their own base lr."""
        return self(step) / self.max_lr if self.max_lr > 0 else 0.0


def set_lr(
    optimizer: Any, schedule: WarmupCosine, step: int, base_lrs: list[float] | None = None
) -> float:
    """Set every param group's lr for `step` and return the schedule's lr.

    `optimizer` is anything with `param_groups` (a torch.optim.Optimizer, MuonWithAdamW).

    Without `base_lrs` every group gets schedule(step); with them group i gets
    base_lrs[i] * schedule.factor(step) (e.g. Muon and AdamW groups with different peaks).
    """
    lr = schedule(step)
    groups = optimizer.param_groups
    if base_lrs is not None and len(base_lrs) != len(groups):
        raise LLMInternalsError(
            f"set_lr got {len(base_lrs)} base_lrs for {len(groups)} param groups"
        )
    for i, group in enumerate(groups):
        group["lr"] = lr if base_lrs is None else base_lrs[i] * schedule.factor(step)
    return lr
