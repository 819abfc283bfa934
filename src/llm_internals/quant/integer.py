"""Integer weight quantisation: symmetric (absmax) and asymmetric (zero-point), any bit width,
per tensor / per channel / per group; 4-bit codes packed two a byte (quant.nf4's nibble order).

symmetric, b bits:  scale = max|w| / (2^(b-1) - 1),  q = round(w / scale)          in [-qmax, qmax]
asymmetric, b bits: scale = (max(w, 0) - min(w, 0)) / (2^b - 1),  zero = round(-min / scale),
                    q = clamp(round(w / scale) + zero, 0, 2^b - 1),  w ~ (q - zero) * scale
Both round to the nearest step, so |w - dequant(w)| <= scale / 2 for every element (the range
includes 0, so zero is representable exactly and padding/ReLU zeros stay zero).
"""

from __future__ import annotations

import torch

from llm_internals.quant.groups import Granularity, from_groups, group_absmax, to_groups
from llm_internals.quant.nf4 import pack_nibbles, unpack_nibbles

TINY = torch.finfo(torch.float32).tiny


def quantize_symmetric(
    weight: torch.Tensor, bits: int, granularity: Granularity, name: str = "weight"
) -> dict[str, torch.Tensor]:
    """{"qdata": int8 codes in the weight's shape, "scale": fp32 [rows, n_groups]}."""
    qmax = 2 ** (bits - 1) - 1
    groups = to_groups(weight.detach().float(), granularity, name)
    scale = group_absmax(groups).clamp_min(TINY) / qmax
    codes = torch.round(groups / scale[..., None]).clamp(-qmax, qmax).to(torch.int8)
    return {"qdata": from_groups(codes, weight.shape), "scale": scale}


def dequantize_symmetric(
    parts: dict[str, torch.Tensor], shape: tuple[int, ...], granularity: Granularity
) -> torch.Tensor:
    groups = to_groups(parts["qdata"], granularity, "qdata").float()
    return from_groups(groups * parts["scale"][..., None], shape)


def quantize_asymmetric(
    weight: torch.Tensor, bits: int, granularity: Granularity, name: str = "weight"
) -> dict[str, torch.Tensor]:
    """{"qdata": uint8 codes (4-bit ones packed two a byte), "scale": fp32, "zero": uint8}."""
    qmax = 2**bits - 1
    groups = to_groups(weight.detach().float(), granularity, name)
    low = groups.amin(dim=-1).clamp_max(0)
    high = groups.amax(dim=-1).clamp_min(0)
    scale = ((high - low) / qmax).clamp_min(TINY)
    zero = torch.round(-low / scale).clamp(0, qmax)
    codes = torch.round(groups / scale[..., None]) + zero[..., None]
    codes = codes.clamp(0, qmax).to(torch.uint8)
    codes = from_groups(codes, weight.shape)
    if bits == 4:
        codes = pack_nibbles(codes.reshape(-1)).reshape(*weight.shape[:-1], -1)
    return {"qdata": codes, "scale": scale, "zero": zero.to(torch.uint8)}


def unpack_codes(parts: dict[str, torch.Tensor], bits: int, shape: tuple[int, ...]) -> torch.Tensor:
    """The asymmetric codes as uint8 in the weight's shape (4-bit ones unpacked)."""
    codes = parts["qdata"]
    return unpack_nibbles(codes.reshape(-1)).reshape(shape) if bits == 4 else codes


def dequantize_asymmetric(
    parts: dict[str, torch.Tensor], shape: tuple[int, ...], bits: int, granularity: Granularity
) -> torch.Tensor:
    groups = to_groups(unpack_codes(parts, bits, shape), granularity, "qdata").float()
    zero = parts["zero"].float()[..., None]
    return from_groups((groups - zero) * parts["scale"][..., None], shape)
