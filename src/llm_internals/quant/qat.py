"""Quantisation-aware training: the forward pass uses the quantised weights, the backward pass
treats quantisation as the identity (the straight-through estimator, Bengio et al. 2013).

    w_q = w + (Q(w) - w).detach()      forward: Q(w);  d w_q / d w = I

so the fp32 master weights receive exactly the gradient the loss has with respect to the
dequantised weights, and learn to sit where rounding hurts least. Any registered scheme works;
W8A8 also fake-quantises the activations per token. After training, `quantize_model` turns the
QATLinear layers (they are nn.Linear) into QuantizedLinear with the trained weights.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from llm_internals.quant.schemes import Scheme, fake_quantize, get_scheme


def straight_through(value: torch.Tensor, quantized: torch.Tensor) -> torch.Tensor:
    """`quantized` in the forward pass, the identity's gradient to `value` in the backward."""
    return value + (quantized - value).detach()


def fake_quantize_activations(x: torch.Tensor) -> torch.Tensor:
    """Per-token int8 absmax round trip of the activations (W8A8), straight-through."""
    scale = x.detach().abs().amax(dim=-1, keepdim=True).clamp_min(1e-12) / 127
    return straight_through(x, torch.round(x.detach() / scale).clamp(-127, 127) * scale)


class QATLinear(nn.Linear):
    """An nn.Linear (same Parameters, trainable) whose forward uses fake-quantised weights."""

    def __init__(self, linear: nn.Linear, scheme: Scheme, name: str = "weight") -> None:
        nn.Module.__init__(self)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight, self.bias = linear.weight, linear.bias
        self.scheme, self.tensor_name = scheme, name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = straight_through(
            self.weight, fake_quantize(self.weight, self.scheme, self.tensor_name)
        )
        if self.scheme.activation_int8:
            x = fake_quantize_activations(x)
        return F.linear(x, weight, self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, fake-quant {self.scheme.name}"


def prepare_qat(model: nn.Module, scheme: str, skip: tuple[str, ...] = ()) -> list[str]:
    """Wrap every nn.Linear of `model` (not in `skip`) in a QATLinear; returns their names."""
    chosen = get_scheme(scheme)
    names = [name for name, m in model.named_modules() if type(m) is nn.Linear and name not in skip]
    for name in names:
        parent, _, attr = name.rpartition(".")
        owner = model.get_submodule(parent) if parent else model
        setattr(owner, attr, QATLinear(getattr(owner, attr), chosen, f"{name}.weight"))
    return names
