"""E2M1, MXFP4 and NVFP4: the value table derived from the bit layout, round-to-nearest-even with
saturation, values exactly on the E2M1 grid, MX scales exact powers of two chosen as the OCP MX
spec says, NVFP4's two-level scales, and a brute-force nearest-value reference."""

from __future__ import annotations

import math

import pytest
import torch

from llm_internals.quant.fp4 import (
    decode_e2m1,
    dequantize_mxfp4,
    dequantize_nvfp4,
    encode_e2m1,
    quantize_mxfp4,
    quantize_nvfp4,
)
from llm_internals.quant.nf4 import unpack_nibbles


def _e2m1_from_bits(code: int) -> float:
    """E2M1: sign bit 3, exponent bits 2-1 (bias 1), mantissa bit 0; exponent 0 is subnormal."""
    sign = -1.0 if code & 8 else 1.0
    exponent, mantissa = (code >> 1) & 3, code & 1
    if exponent == 0:
        return sign * mantissa * 0.5
    return sign * 2.0 ** (exponent - 1) * (1 + mantissa / 2)


GRID = torch.tensor(sorted({abs(_e2m1_from_bits(c)) for c in range(16)}))


def _nearest_e2m1(x: torch.Tensor) -> torch.Tensor:
    magnitude = x.abs().clamp_max(6.0)
    return torch.sign(x) * GRID[(magnitude[..., None] - GRID).abs().argmin(dim=-1)]


def test_decode_is_the_bit_layout():
    codes = torch.arange(16, dtype=torch.uint8)
    assert decode_e2m1(codes).tolist() == [_e2m1_from_bits(c) for c in range(16)]


def test_encode_rounds_to_nearest_ties_to_even_and_saturates():
    ties = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0])
    # each tie goes to the neighbour whose mantissa bit is 0 (OCP MX: roundTiesToEven)
    assert decode_e2m1(encode_e2m1(ties)).tolist() == [0.0, 1.0, 1.0, 2.0, 2.0, 4.0, 4.0]
    assert decode_e2m1(encode_e2m1(-ties)).tolist() == [0.0, -1.0, -1.0, -2.0, -2.0, -4.0, -4.0]
    assert decode_e2m1(encode_e2m1(torch.tensor([7.9, -100.0, 5.01]))).tolist() == [6.0, -6.0, 6.0]
    torch.manual_seed(0)
    x = torch.randn(10_000) * 3
    assert torch.equal(decode_e2m1(encode_e2m1(x)), _nearest_e2m1(x))


def _weight() -> torch.Tensor:
    torch.manual_seed(1)
    w = torch.randn(8, 128) * 0.03
    w[0, :32] = 0.0  # an all-zero block
    w[1, 40] = 1.0  # an outlier in one block
    return w


def test_mxfp4_scales_are_powers_of_two_as_the_spec_chooses():
    w = _weight()
    parts = quantize_mxfp4(w)
    assert parts["scale"].dtype == torch.uint8 and parts["scale"].shape == (8, 4)
    deq = dequantize_mxfp4(parts, w.shape)
    for row in range(8):
        for block in range(4):
            values = w[row, block * 32 : (block + 1) * 32]
            amax = values.abs().max().item()
            if amax == 0:
                assert (deq[row, block * 32 : (block + 1) * 32] == 0).all()
                continue
            exponent = math.floor(math.log2(amax)) - 2  # emax of E2M1 is 2
            assert parts["scale"][row, block].item() == exponent + 127
            x = 2.0**exponent
            elements = deq[row, block * 32 : (block + 1) * 32] / x
            assert torch.isin(elements.abs(), GRID).all()  # exactly on the grid
            assert torch.equal(elements, _nearest_e2m1(values / x))


def test_nvfp4_two_level_scales_and_grid():
    w = _weight()
    parts = quantize_nvfp4(w)
    assert parts["scale"].dtype == torch.float8_e4m3fn and parts["scale"].shape == (8, 8)
    tensor_scale = w.abs().max() / (6 * 448)
    assert parts["scale2"].item() == pytest.approx(tensor_scale.item(), rel=1e-6)
    blocks = w.reshape(8, 8, 16)
    expected_block_scale = (blocks.abs().amax(-1) / 6 / tensor_scale).to(torch.float8_e4m3fn)
    assert torch.equal(parts["scale"].float(), expected_block_scale.float())
    step = (parts["scale"].float() * parts["scale2"])[..., None]
    codes = unpack_nibbles(parts["qdata"].reshape(-1)).reshape(8, 8, 16)
    values = decode_e2m1(codes)  # on the grid by construction; are they the nearest?
    deq = dequantize_nvfp4(parts, w.shape).reshape(8, 8, 16)
    assert torch.equal(deq, values * step)
    safe = torch.where(step > 0, step, torch.ones_like(step))
    assert torch.equal(values, _nearest_e2m1(blocks / safe))
    assert (deq[0, :2] == 0).all()


@pytest.mark.parametrize(
    ("quantize", "dequantize", "block"),
    [(quantize_mxfp4, dequantize_mxfp4, 32), (quantize_nvfp4, dequantize_nvfp4, 16)],
)
def test_round_trip_error_bound(quantize, dequantize, block):
    """|w - deq| <= half the widest E2M1 gap (1.0, between 4 and 6) times the block's step, and for
    MX saturated values (|w|/X in (6, 8)) up to 2 steps; relative to the block absmax <= 1/4."""
    w = _weight()
    deq = dequantize(quantize(w), w.shape)
    err = (w - deq).abs().reshape(8, -1, block)
    amax = w.abs().reshape(8, -1, block).amax(-1, keepdim=True)
    assert (err <= amax / 4 + 1e-7).all()


def test_mxfp4_equals_ggml_reference():
    """gguf.quants' MXFP4 (the Python port of ggml's) picks the same scales and codes."""
    import gguf.quants as gguf_quants
    from gguf import GGMLQuantizationType

    w = _weight()
    reference = gguf_quants.dequantize(
        gguf_quants.quantize(w.numpy(), GGMLQuantizationType.MXFP4), GGMLQuantizationType.MXFP4
    )
    ours = dequantize_mxfp4(quantize_mxfp4(w), w.shape)
    assert torch.equal(ours, torch.from_numpy(reference.copy()))
