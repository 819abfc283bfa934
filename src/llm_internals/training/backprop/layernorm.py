"""LayerNorm forward and backward over the last dimension (size n).

    mu = mean(x),  var = mean((x - mu)^2),  r = 1 / sqrt(var + eps)
    xhat = (x - mu) r,   y = xhat * w + b

Backward: dw = sum_rows dy * xhat, db = sum_rows dy, and with g = dy * w (the gradient at xhat),

    dx = r * (g - mean(g) - xhat * mean(g * xhat))

The two subtracted means are the normalization's two constraints showing up in the gradient:
shifting every x by the same amount changes nothing (mu absorbs it), and neither does scaling
(r absorbs it), so the gradient has no component along either direction.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class LayerNormCache:
    xhat: torch.Tensor
    rstd: torch.Tensor
    weight: torch.Tensor
    has_bias: bool


def layernorm_forward(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, eps: float
) -> tuple[torch.Tensor, LayerNormCache]:
    mean = x.mean(dim=-1, keepdim=True)
    centered = x - mean
    variance = (centered * centered).mean(dim=-1, keepdim=True)
    rstd = torch.rsqrt(variance + eps)
    xhat = centered * rstd
    y = xhat * weight
    if bias is not None:
        y = y + bias
    return y, LayerNormCache(xhat, rstd, weight, bias is not None)


def layernorm_backward(
    dy: torch.Tensor, cache: LayerNormCache
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(dL/dx, dL/dweight, dL/dbias or None) from dL/dy."""
    dim = dy.shape[-1]
    rows_dy = dy.reshape(-1, dim)
    dweight = (rows_dy * cache.xhat.reshape(-1, dim)).sum(dim=0)
    dbias = rows_dy.sum(dim=0) if cache.has_bias else None
    g = dy * cache.weight
    dx = cache.rstd * (
        g - g.mean(dim=-1, keepdim=True) - cache.xhat * (g * cache.xhat).mean(dim=-1, keepdim=True)
    )
    return dx, dweight, dbias
