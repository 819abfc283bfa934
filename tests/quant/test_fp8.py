"""FP8 quantisation against torch's own float8 casting and against a brute-force nearest value
over all 256 bit patterns of the format; relative error bounds from the mantissa width."""

from __future__ import annotations

import pytest
import torch

from llm_internals.quant.fp8 import FP8_DTYPES, dequantize_fp8, quantize_fp8

MANTISSA_BITS = {"e4m3": 3, "e5m2": 2}


def _grid(dtype: torch.dtype) -> torch.Tensor:
    """Every finite value of the format, from its bit patterns."""
    values = torch.arange(256, dtype=torch.uint8).view(dtype).float()
    return values[values.isfinite()].unique()


@pytest.mark.parametrize("fmt", ["e4m3", "e5m2"])
@pytest.mark.parametrize("granularity", ["tensor", 64])
def test_codes_are_torch_casting_and_the_nearest_grid_value(fmt, granularity):
    torch.manual_seed(0)
    w = torch.randn(16, 128) * 0.05
    parts = quantize_fp8(w, fmt, granularity)
    assert parts["qdata"].dtype == FP8_DTYPES[fmt]
    if granularity == "tensor":
        per_element = parts["scale"].reshape(()).expand(w.shape)
    else:
        per_element = parts["scale"].repeat_interleave(granularity, dim=1)
    scaled = w / per_element
    torch.testing.assert_close(
        parts["qdata"].float(), scaled.to(FP8_DTYPES[fmt]).float(), atol=0, rtol=0
    )
    grid = _grid(FP8_DTYPES[fmt])
    nearest = grid[(scaled[..., None] - grid).abs().argmin(dim=-1)]
    torch.testing.assert_close(parts["qdata"].float(), nearest, atol=0, rtol=0)
    # the largest magnitude maps to the format's largest finite value
    assert parts["qdata"].float().abs().max() == torch.finfo(FP8_DTYPES[fmt]).max
    deq = dequantize_fp8(parts, w.shape, granularity)
    smallest_normal = torch.finfo(FP8_DTYPES[fmt]).smallest_normal
    normal = scaled.abs() >= smallest_normal
    rel = ((deq - w).abs() / w.abs())[normal]
    assert rel.max() <= 2.0 ** -(MANTISSA_BITS[fmt] + 1) + 1e-7


def test_no_nan_at_the_top_of_the_range():
    w = torch.tensor([[448.0, -448.0, 1e-3, 0.0]])
    for fmt in FP8_DTYPES:
        deq = dequantize_fp8(quantize_fp8(w, fmt), w.shape)
        assert deq.isfinite().all() and deq[0, 0] == 448.0 and deq[0, 3] == 0.0
