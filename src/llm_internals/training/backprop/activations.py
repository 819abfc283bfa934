"""Backward passes of elementwise nonlinearities: each output depends on one input only, so the
chain rule is a plain product with the local derivative, dL/dx = dL/dy * f'(x).

    sigmoid:   s = 1 / (1 + e^-x),                    s' = s (1 - s)
    gelu_tanh: g = 0.5 x (1 + tanh(u)),  u = k (x + 0.044715 x^3),  k = sqrt(2 / pi)
               g' = 0.5 (1 + tanh u) + 0.5 x (1 - tanh^2 u) k (1 + 3 * 0.044715 x^2)
"""

from __future__ import annotations

import math

import torch

from llm_internals.layers.activations import gelu_tanh

_K = math.sqrt(2.0 / math.pi)
_C = 0.044715


def sigmoid_forward(x: torch.Tensor) -> torch.Tensor:
    """1 / (1 + exp(-x))."""
    return 1.0 / (1.0 + torch.exp(-x))


def sigmoid_local_grad(s: torch.Tensor) -> torch.Tensor:
    """ds/dx = s (1 - s), written in terms of the output s."""
    return s * (1.0 - s)


def sigmoid_backward(dy: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """dL/dx from dL/ds and the forward output s."""
    return dy * sigmoid_local_grad(s)


def gelu_tanh_forward(x: torch.Tensor) -> torch.Tensor:
    """GPT-2's GELU (the library's `layers.activations.gelu_tanh`)."""
    return gelu_tanh(x)


def gelu_tanh_backward(dy: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """dL/dx from dL/dy and the forward input x."""
    t = torch.tanh(_K * (x + _C * x * x * x))
    local = 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * _K * (1.0 + 3.0 * _C * x * x)
    return dy * local
