"""4-bit floats: E2M1 values with a shared scale per block, as MXFP4 and NVFP4 define them.

E2M1 (1 sign, 2 exponent, 1 mantissa bit, bias 1) has the magnitudes 0, 0.5, 1, 1.5, 2, 3, 4, 6;
the 3 magnitude bits, read as an integer, are the index into that list, and bit 3 is the sign.
Conversion rounds to the nearest value, ties to the even code (OCP MX spec), saturating at 6.

MXFP4 (OCP Microscaling v1.0): blocks of 32, scale X = 2^(floor(log2 max|w|) - 2) stored as E8M0
(a biased exponent byte, 127 = 2^0); 2 is E2M1's largest exponent, so max|w| / X lies in [4, 8)
and only the top values above 6 saturate.
NVFP4: blocks of 16, block scale = max|w| / 6 / s_t rounded to E4M3, and one fp32 per-tensor
scale s_t = max|w_tensor| / (6 * 448) so the E4M3 block scales use their full range.
"""

from __future__ import annotations

import torch

from llm_internals.quant.groups import from_groups, group_absmax, to_groups
from llm_internals.quant.nf4 import pack_nibbles, unpack_nibbles

E2M1_VALUES = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0])
E2M1_MAX = 6.0
MX_BLOCK, NV_BLOCK = 32, 16
E8M0_BIAS = 127
E4M3_MAX = 448.0


def encode_e2m1(x: torch.Tensor) -> torch.Tensor:
    """Nearest E2M1 code (uint8 0..15, sign in bit 3) of each value; ties to the even code."""
    magnitude = x.abs().clamp_max(E2M1_MAX)
    values = E2M1_VALUES.to(x.device)
    midpoints = (values[1:] + values[:-1]) / 2
    index = torch.bucketize(magnitude, midpoints)  # a tie lands on the lower (left) code
    tie = magnitude == midpoints[index.clamp_max(len(midpoints) - 1)]
    index = index + (tie & (index % 2 == 1)).long()  # lower code odd: the even one is above
    sign = (x < 0) & (index > 0)  # -0 is stored as +0
    return (index | (sign.long() << 3)).to(torch.uint8)


def decode_e2m1(codes: torch.Tensor) -> torch.Tensor:
    magnitude = E2M1_VALUES.to(codes.device)[(codes & 0x7).long()]
    return torch.where(codes & 0x8 > 0, -magnitude, magnitude)


def _pack(codes: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    return pack_nibbles(codes.reshape(-1)).reshape(*shape[:-1], -1)


def _unpack(packed: torch.Tensor, block: int, shape: tuple[int, ...]) -> torch.Tensor:
    return to_groups(unpack_nibbles(packed.reshape(-1)).reshape(shape), block, "qdata")


def quantize_mxfp4(weight: torch.Tensor, name: str = "weight") -> dict[str, torch.Tensor]:
    """{"qdata": packed E2M1 codes, "scale": uint8 E8M0 exponents [rows, n_blocks]}."""
    groups = to_groups(weight.detach().float(), MX_BLOCK, name)
    amax = group_absmax(groups)
    _, exponent = torch.frexp(amax)  # amax = m * 2^e with m in [0.5, 1): floor(log2) = e - 1
    shared = torch.where(amax > 0, exponent - 1 - 2, torch.full_like(exponent, -E8M0_BIAS))
    shared = shared.clamp(-E8M0_BIAS, E8M0_BIAS)
    codes = encode_e2m1(groups * torch.exp2(-shared.float())[..., None])
    return {"qdata": _pack(codes, weight.shape), "scale": (shared + E8M0_BIAS).to(torch.uint8)}


def dequantize_mxfp4(parts: dict[str, torch.Tensor], shape: tuple[int, ...]) -> torch.Tensor:
    values = decode_e2m1(_unpack(parts["qdata"], MX_BLOCK, shape))
    scale = torch.exp2(parts["scale"].float() - E8M0_BIAS)
    return from_groups(values * scale[..., None], shape)


def quantize_nvfp4(weight: torch.Tensor, name: str = "weight") -> dict[str, torch.Tensor]:
    """{"qdata": packed E2M1, "scale": float8_e4m3fn per block of 16, "scale2": fp32 scalar}."""
    groups = to_groups(weight.detach().float(), NV_BLOCK, name)
    amax = group_absmax(groups)
    tensor_scale = amax.max() / (E2M1_MAX * E4M3_MAX)
    tensor_scale = torch.where(tensor_scale > 0, tensor_scale, torch.ones_like(tensor_scale))
    block_scale = (amax / E2M1_MAX / tensor_scale).clamp_max(E4M3_MAX).to(torch.float8_e4m3fn)
    step = block_scale.float() * tensor_scale
    step = torch.where(step > 0, step, torch.ones_like(step))  # an all-zero block stays zero
    codes = encode_e2m1(groups / step[..., None])
    return {"qdata": _pack(codes, weight.shape), "scale": block_scale, "scale2": tensor_scale}


def dequantize_nvfp4(parts: dict[str, torch.Tensor], shape: tuple[int, ...]) -> torch.Tensor:
    values = decode_e2m1(_unpack(parts["qdata"], NV_BLOCK, shape))
    step = parts["scale"].float() * parts["scale2"].float()
    return from_groups(values * step[..., None], shape)
