"""The LoRA linear layer (Hu et al. 2021, as implemented in HF PEFT): a frozen base plus B A.

    h = W0 x + s * B A dropout(x),   A: (r, in),  B: (out, r),  s = alpha / r  (rsLoRA: / sqrt r)

A starts Kaiming-uniform with a = sqrt(5) (nn.Linear's default, taken by PEFT from loralib), B
starts at zero, so at initialisation the layer computes exactly the base output and only B gets a
gradient at step 0 (dL/dA = s B^T (dL/dh) x^T = 0). Dropout touches only the adapter's input.

One layer holds several named adapters (`add_adapter`) and uses one at a time (`set_adapter`;
None runs the base alone). `merge` folds the active adapter into the base weight,
W <- W + s B A, so inference costs nothing extra; `unmerge` subtracts the same product (in fp32
and cast back, as PEFT does), which restores W up to one rounding per element. The base may be
an nn.Linear or a frozen NF4 linear (QLoRA, quant/nf4.py); only an nn.Linear base can merge.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch
from torch import nn

from llm_internals.errors import LLMInternalsError


@dataclass(frozen=True)
class LoraSettings:
    """One adapter's hyper-parameters (PEFT's names in comments)."""

    r: int = 8  # r
    alpha: float = 16.0  # lora_alpha
    dropout: float = 0.0  # lora_dropout
    use_rslora: bool = False  # use_rslora: alpha / sqrt(r) keeps the update's size as r grows

    def __post_init__(self) -> None:
        if isinstance(self.r, bool) or not isinstance(self.r, int) or self.r <= 0:
            raise LLMInternalsError(
                f"LoRA rank must be a positive integer, got {self.r!r}", hint="--lora-r 8"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise LLMInternalsError(
                f"LoRA dropout must be in [0, 1), got {self.dropout!r}", hint="--lora-dropout 0.05"
            )

    @property
    def scaling(self) -> float:
        return self.alpha / (math.sqrt(self.r) if self.use_rslora else self.r)


class LoraLinear(nn.Module):
    """A frozen `base` linear layer with named low-rank adapters; one of them (or none) active."""

    def __init__(self, base: nn.Module) -> None:
        super().__init__()
        self.base = base
        self.in_features, self.out_features = base.in_features, base.out_features
        self.lora_A = nn.ModuleDict()
        self.lora_B = nn.ModuleDict()
        self.lora_dropout = nn.ModuleDict()
        self.settings: dict[str, LoraSettings] = {}
        self.active: str | None = None
        self.merged: str | None = None  # the adapter folded into base.weight, if any
        for param in base.parameters():
            param.requires_grad_(False)
        self.train(base.training)  # wrapping a model in eval mode keeps it there

    def add_adapter(self, name: str, settings: LoraSettings) -> None:
        """A new adapter `name`: A Kaiming-uniform (a = sqrt 5), B = 0; it becomes active."""
        if name in self.settings:
            raise LLMInternalsError(f"adapter {name!r} is already loaded on this layer")
        device = next(itertools.chain(self.base.parameters(), self.base.buffers())).device
        a = nn.Linear(self.in_features, settings.r, bias=False, device=device)
        b = nn.Linear(settings.r, self.out_features, bias=False, device=device)
        nn.init.kaiming_uniform_(a.weight, a=math.sqrt(5))
        nn.init.zeros_(b.weight)
        self.lora_A[name], self.lora_B[name] = a, b
        dropout = nn.Dropout(settings.dropout) if settings.dropout else nn.Identity()
        self.lora_dropout[name] = dropout.train(self.training)
        self.settings[name] = settings
        self.set_adapter(name)

    def set_adapter(self, name: str | None) -> None:
        """Use adapter `name` (None: the base alone). A merged layer must be unmerged first."""
        if name is not None and name not in self.settings:
            raise LLMInternalsError(
                f"adapter {name!r} is not loaded (loaded: {', '.join(self.settings) or 'none'})"
            )
        if self.merged is not None and name != self.merged:
            raise LLMInternalsError(
                f"adapter {self.merged!r} is merged into the base; unmerge it before switching"
            )
        self.active = name

    def delta_weight(self, name: str) -> torch.Tensor:
        """s * B A in fp32, shaped like the base weight (out, in)."""
        a = self.lora_A[name].weight.float()
        b = self.lora_B[name].weight.float()
        return (b @ a) * self.settings[name].scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        name = self.active
        if name is None or self.merged is not None:
            return out
        a, b = self.lora_A[name], self.lora_B[name]
        update = b(a(self.lora_dropout[name](x.to(a.weight.dtype))))
        return out + (update * self.settings[name].scaling).to(out.dtype)

    def merge(self) -> None:
        """W <- W + s B A for the active adapter (a no-op when none is active or one is merged)."""
        if self.active is None or self.merged is not None:
            return
        weight = self._mergeable_weight()
        with torch.no_grad():
            weight.copy_((weight.float() + self.delta_weight(self.active)).to(weight.dtype))
        self.merged = self.active

    def unmerge(self) -> None:
        """W <- W - s B A for the merged adapter: W again up to one rounding per element."""
        if self.merged is None:
            return
        weight = self._mergeable_weight()
        with torch.no_grad():
            weight.copy_((weight.float() - self.delta_weight(self.merged)).to(weight.dtype))
        self.merged = None

    def _mergeable_weight(self) -> torch.Tensor:
        if not isinstance(self.base, nn.Linear):
            raise LLMInternalsError(
                f"cannot merge into a {type(self.base).__name__} base (a quantised weight)",
                hint="merge a QLoRA adapter into the full-precision model: finetune --merge "
                "loads it unquantised",
            )
        return self.base.weight

    def extra_repr(self) -> str:
        adapters = ", ".join(f"{n}: r={s.r}, alpha={s.alpha}" for n, s in self.settings.items())
        return f"active={self.active}, merged={self.merged}, adapters=[{adapters}]"
