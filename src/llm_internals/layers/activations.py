"""Activation functions of transformer feed-forward layers, written as their formulas.

    relu(x)      = max(x, 0)                                        (original Transformer)
    gelu(x)      = x * Phi(x) = 0.5 x (1 + erf(x / sqrt(2)))        (BERT, "gelu")
    gelu_tanh(x) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))  (GPT-2, "gelu_new")
    silu(x)      = x * sigmoid(x)                                   (gate of SwiGLU in Llama/Qwen)

GELU weighs x by the probability that a standard normal variable is below x: a smooth ReLU that
lets small negative values through. The tanh form is the cheap approximation GPT-2 was trained
with; checkpoints must be run with the variant they were trained with.

`get_activation(name, fused=True)` returns torch's single-kernel equivalent instead (the fast
path); tests check the written-out formulas against those kernels.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from llm_internals.errors import LLMInternalsError

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def relu(x: torch.Tensor) -> torch.Tensor:
    """max(x, 0)."""
    return torch.clamp_min(x, 0.0)


def gelu(x: torch.Tensor) -> torch.Tensor:
    """Exact GELU: x * Phi(x) with Phi the standard normal CDF."""
    return 0.5 * x * (1.0 + torch.erf(x * (1.0 / math.sqrt(2.0))))


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    """GELU's tanh approximation (GPT-2's "gelu_new")."""
    return 0.5 * x * (1.0 + torch.tanh(_SQRT_2_OVER_PI * (x + 0.044715 * x * x * x)))


def silu(x: torch.Tensor) -> torch.Tensor:
    """SiLU (swish with beta 1): x * sigmoid(x)."""
    return x * torch.sigmoid(x)


ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": relu,
    "gelu": gelu,
    "gelu_tanh": gelu_tanh,
    "silu": silu,
}

FUSED_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": F.relu,
    "gelu": F.gelu,
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "silu": F.silu,
}

# Names used in Hugging Face config.json files ("hidden_act", "activation_function").
HF_ACTIVATION_NAMES: dict[str, str] = {
    "relu": "relu",
    "gelu": "gelu",
    "gelu_python": "gelu",
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "gelu_fast": "gelu_tanh",
    "silu": "silu",
    "swish": "silu",
}


def get_activation(name: str, fused: bool = False) -> Callable[[torch.Tensor], torch.Tensor]:
    """The activation called `name` (one of ACTIVATIONS); a clear error for anything else."""
    try:
        return FUSED_ACTIVATIONS[name] if fused else ACTIVATIONS[name]
    except KeyError:
        raise LLMInternalsError(
            f"unknown activation {name!r}", hint=f"use one of {', '.join(sorted(ACTIVATIONS))}"
        ) from None
