"""NF4: the 4-bit NormalFloat code of QLoRA (Dettmers et al. 2023), block-wise absmax, double
quantisation of the scales, and a frozen linear layer that stores its weight in NF4.

A block of 64 weights is divided by its absmax so it lies in [-1, 1]; each value is replaced by the
index of the nearest of 16 code values (the quantiles of N(0, 1) rescaled to [-1, 1], asymmetric so
that 0 is exact). Two indices are packed per byte: the first element of each pair in the HIGH
nibble, the second in the low nibble (bitsandbytes' order).

Double quantisation stores the fp32 absmaxes themselves in 8 bits: subtract their mean, then
quantise blocks of 256 with an absmax-scaled int8 code. Overhead per weight drops from 32/64 = 0.5
bits to 8/64 + 32/(64*256) ~= 0.127 bits (spec 7.2).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from llm_internals.errors import LLMInternalsError

# bitsandbytes `create_normal_map` (offset 0.9677083), as published; see the spec, section 7.2.
NF4_CODE = torch.tensor(
    [
        -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
        -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
        0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
        0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
    ],
    dtype=torch.float32,
)  # fmt: skip
NF4_BLOCK = 64
SCALE_BLOCK = 256


@dataclass
class NF4Tensor:
    """A tensor in NF4: `packed` uint8 (two codes a byte), one scale per block of `block` values.

    With double quantisation `absmax` is None and the scales are `absmax_q` (int8, blocks of 256)
    times `absmax_scale` (fp32 per 256-block) plus `absmax_mean`.
    """

    packed: torch.Tensor
    shape: tuple[int, ...]
    block: int
    absmax: torch.Tensor | None = None
    absmax_q: torch.Tensor | None = None
    absmax_scale: torch.Tensor | None = None
    absmax_mean: torch.Tensor | None = None

    def scales(self) -> torch.Tensor:
        """The per-block fp32 absmax, reconstructed if it was double-quantised."""
        if self.absmax is not None:
            return self.absmax
        return dequantize_scales(self.absmax_q, self.absmax_scale, self.absmax_mean)

    def nbytes(self) -> int:
        parts = [self.packed, self.absmax, self.absmax_q, self.absmax_scale, self.absmax_mean]
        return sum(p.numel() * p.element_size() for p in parts if p is not None)


def nearest_code(normalised: torch.Tensor, code: torch.Tensor = NF4_CODE) -> torch.Tensor:
    """Index (uint8) of the nearest code value for each element of `normalised` (in [-1, 1]).
    Midpoints between neighbouring codes decide; a tie goes to the upper code."""
    midpoints = (code[1:] + code[:-1]) / 2
    return torch.bucketize(normalised.float().contiguous(), midpoints.to(normalised.device)).to(
        torch.uint8
    )


def pack_nibbles(codes: torch.Tensor) -> torch.Tensor:
    """Pack flat uint8 4-bit codes (even length): the first of each pair in the high nibble."""
    pairs = codes.reshape(-1, 2)
    return (pairs[:, 0] << 4) | pairs[:, 1]


def unpack_nibbles(packed: torch.Tensor) -> torch.Tensor:
    """Inverse of `pack_nibbles`: a flat uint8 tensor twice as long."""
    return torch.stack([packed >> 4, packed & 0x0F], dim=1).reshape(-1)


def quantize_scales(absmax: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Double quantisation: (absmax - mean) in int8 with one fp32 scale per SCALE_BLOCK values.
    Returns (codes int8, scale fp32 per block, mean fp32 scalar). bitsandbytes uses its dynamic
    8-bit float map here; a symmetric int8 code is simpler and meets the same <1% error bound."""
    block = SCALE_BLOCK
    mean = absmax.mean()
    centred = absmax - mean
    padded = torch.nn.functional.pad(centred, (0, (-centred.numel()) % block)).reshape(-1, block)
    scale = padded.abs().amax(dim=1).clamp_min(torch.finfo(torch.float32).tiny) / 127
    codes = torch.round(padded / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return codes.reshape(-1)[: absmax.numel()], scale, mean


def dequantize_scales(codes: torch.Tensor, scale: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """Inverse of `quantize_scales`: codes * scale of their 256-block + mean."""
    block_of = torch.arange(codes.numel(), device=codes.device) // SCALE_BLOCK
    return codes.float() * scale[block_of] + mean


def quantize_nf4(
    weight: torch.Tensor, block: int = NF4_BLOCK, double_quant: bool = False, name: str = "weight"
) -> NF4Tensor:
    """Quantise `weight` to NF4 with one absmax per `block` consecutive elements (row-major)."""
    if weight.numel() % block or block % 2:
        raise LLMInternalsError(
            f"nf4: tensor {name!r} of shape {tuple(weight.shape)} has {weight.numel()} elements, "
            f"not a multiple of the block size {block}",
            hint="choose another --scheme, or a model whose widths are multiples of 64",
        )
    blocks = weight.detach().float().reshape(-1, block)
    absmax = blocks.abs().amax(dim=1)
    safe = torch.where(absmax > 0, absmax, torch.ones_like(absmax))
    codes = nearest_code(blocks / safe[:, None])
    packed = pack_nibbles(codes.reshape(-1))
    result = NF4Tensor(packed=packed, shape=tuple(weight.shape), block=block)
    if double_quant:
        result.absmax_q, result.absmax_scale, result.absmax_mean = quantize_scales(absmax)
    else:
        result.absmax = absmax
    return result


def dequantize_nf4(q: NF4Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """code[index] * absmax of the block, reshaped to the original shape."""
    codes = unpack_nibbles(q.packed).long()
    values = NF4_CODE.to(q.packed.device)[codes].reshape(-1, q.block) * q.scales()[:, None]
    return values.reshape(q.shape).to(dtype)


class NF4Linear(nn.Module):
    """A frozen linear layer whose weight is stored in NF4 and dequantised in every forward
    (QLoRA's compute path: y = x dequant(W)^T + b in `compute_dtype`). It has no trainable
    parameters; the bias, if any, is a frozen buffer."""

    def __init__(
        self,
        linear: nn.Linear,
        block: int = NF4_BLOCK,
        double_quant: bool = False,
        compute_dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.compute_dtype = compute_dtype
        quantized = quantize_nf4(linear.weight, block, double_quant)
        self.nf4_shape, self.nf4_block = quantized.shape, quantized.block
        # Registered as buffers so .to(device) and state_dict() carry them.
        for field in ("packed", "absmax", "absmax_q", "absmax_scale", "absmax_mean"):
            self.register_buffer(f"nf4_{field}", getattr(quantized, field))
        bias = None if linear.bias is None else linear.bias.detach().clone()
        self.register_buffer("bias", bias)

    def _current(self) -> NF4Tensor:
        return NF4Tensor(
            packed=self.nf4_packed,
            shape=self.nf4_shape,
            block=self.nf4_block,
            absmax=self.nf4_absmax,
            absmax_q=self.nf4_absmax_q,
            absmax_scale=self.nf4_absmax_scale,
            absmax_mean=self.nf4_absmax_mean,
        )

    def dequantized_weight(self) -> torch.Tensor:
        return dequantize_nf4(self._current(), self.compute_dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.to(self.compute_dtype)
        out = nn.functional.linear(x.to(self.compute_dtype), self.dequantized_weight(), bias)
        return out.to(x.dtype)

    def extra_repr(self) -> str:
        double = self.nf4_absmax is None
        return f"{self.in_features} -> {self.out_features}, nf4, double_quant={double}"
