"""Normalization layers: LayerNorm (GPT-2, BERT) and RMSNorm (Llama, Mistral, Qwen).

    LayerNorm(x) = (x - mean(x)) / sqrt(var(x) + eps) * weight + bias
    RMSNorm(x)   = x * rsqrt(mean(x^2) + eps) * weight

Both rescale each token's vector to a fixed size so that activations neither explode nor vanish
through dozens of residual layers. RMSNorm drops the mean subtraction and the bias: one reduction
instead of two, and in practice the same quality. The statistics are computed in float32 even for
half-precision inputs (as HF Llama does), because a sum of squares over thousands of bf16 values
loses most of its digits; `eps` sits inside the square root, as in the reference.

`fused = True` swaps the written-out steps for torch's single-kernel F.layer_norm / F.rms_norm
(the fast path; nothing is recorded then). Tests check both give the same numbers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from llm_internals.trace import record


class LayerNorm(nn.Module):
    """Normalize over the last dimension to zero mean and unit variance, then scale and shift."""

    def __init__(self, dim: int, eps: float = 1e-5, bias: bool = True) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None
        self.fused = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused:
            return F.layer_norm(x, self.weight.shape, self.weight, self.bias, self.eps)
        input_dtype = x.dtype
        x32 = x.float() if input_dtype in (torch.float16, torch.bfloat16) else x
        mean = x32.mean(dim=-1, keepdim=True)
        centered = x32 - mean
        variance = (centered * centered).mean(dim=-1, keepdim=True)  # biased, as in the paper
        normed = centered * torch.rsqrt(variance + self.eps)
        record("norm_mean", mean)
        record("norm_variance", variance)
        record("normalized", normed)
        out = normed.to(input_dtype) * self.weight
        if self.bias is not None:
            out = out + self.bias
        record("norm_output", out)
        return out

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


class RMSNorm(nn.Module):
    """Scale each vector by the inverse of its root mean square, then by a learned gain."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.fused = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        input_dtype = x.dtype
        x32 = x.float() if input_dtype in (torch.float16, torch.bfloat16) else x
        if self.fused:
            return self.weight * F.rms_norm(x32, self.weight.shape, eps=self.eps).to(input_dtype)
        mean_square = (x32 * x32).mean(dim=-1, keepdim=True)
        normed = x32 * torch.rsqrt(mean_square + self.eps)
        record("norm_mean_square", mean_square)
        record("normalized", normed)
        out = self.weight * normed.to(input_dtype)
        record("norm_output", out)
        return out

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


def make_norm(kind: str, dim: int, eps: float, bias: bool = True) -> nn.Module:
    """A "layernorm" or "rmsnorm" layer of width `dim` (the config names both)."""
    if kind == "layernorm":
        return LayerNorm(dim, eps=eps, bias=bias)
    if kind == "rmsnorm":
        return RMSNorm(dim, eps=eps)
    raise ValueError(f"unknown norm {kind!r}")  # configs are validated before this point
