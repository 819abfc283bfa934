"""FP8 weights (OCP FP8: E4M3 with max 448 and no infinities, E5M2 with max 57344), stored in
torch's float8_e4m3fn / float8_e5m2 with an fp32 scale per tensor or per block of a row.

    scale = max|w| / max_finite,   q = fp8(w / scale)   (round to nearest even, as torch casts)

A float's error is relative: |w - q * scale| <= 2^-(m+1) |w| for normal values (m = 3 mantissa
bits for E4M3, 2 for E5M2), plus half the smallest subnormal step times `scale` near zero.
"""

from __future__ import annotations

import torch

from llm_internals.quant.groups import Granularity, from_groups, group_absmax, to_groups

FP8_DTYPES = {"e4m3": torch.float8_e4m3fn, "e5m2": torch.float8_e5m2}


def quantize_fp8(
    weight: torch.Tensor, fmt: str, granularity: Granularity = "tensor", name: str = "weight"
) -> dict[str, torch.Tensor]:
    """{"qdata": float8 in the weight's shape, "scale": fp32 [rows, n_groups]}."""
    dtype = FP8_DTYPES[fmt]
    largest = torch.finfo(dtype).max
    groups = to_groups(weight.detach().float(), granularity, name)
    scale = group_absmax(groups).clamp_min(torch.finfo(torch.float32).tiny) / largest
    # the clamp guards against w/scale rounding a hair past the largest finite value (-> NaN)
    codes = (groups / scale[..., None]).clamp(-largest, largest).to(dtype)
    return {"qdata": from_groups(codes, weight.shape), "scale": scale}


def dequantize_fp8(
    parts: dict[str, torch.Tensor], shape: tuple[int, ...], granularity: Granularity = "tensor"
) -> torch.Tensor:
    groups = to_groups(parts["qdata"].float(), granularity, "qdata")
    return from_groups(groups * parts["scale"][..., None], shape)
