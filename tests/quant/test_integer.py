"""Integer quantisers: the round-trip bound |w - deq| <= scale/2 per element for every granularity,
codes in range, zero exact, 4-bit nibble packing, and group sizes that do not divide."""

from __future__ import annotations

import pytest
import torch

from llm_internals.errors import LLMInternalsError
from llm_internals.quant.integer import (
    dequantize_asymmetric,
    dequantize_symmetric,
    quantize_asymmetric,
    quantize_symmetric,
)

GRANULARITIES = ["tensor", "channel", 32, 128]


def _per_element(scale: torch.Tensor, shape: tuple[int, int], granularity) -> torch.Tensor:
    """Each element's scale, broadcast from [rows, n_groups] by the definition of the groups."""
    rows, width = shape
    if granularity == "tensor":
        return scale.reshape(()).expand(shape)
    group = width if granularity == "channel" else granularity
    return scale.reshape(rows, -1).repeat_interleave(group, dim=1)


@pytest.fixture
def weight() -> torch.Tensor:
    torch.manual_seed(0)
    w = torch.randn(24, 256) * torch.linspace(0.1, 2, 256)  # scales vary across the width
    w[3, 5] = 9.0  # an outlier
    return w


@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_symmetric_int8_bound_and_reference(weight, granularity):
    parts = quantize_symmetric(weight, 8, granularity)
    scale = _per_element(parts["scale"], weight.shape, granularity)
    # reference from the formula, element by element
    amax = (scale * 127).clone()
    torch.testing.assert_close(
        parts["qdata"].float(), torch.round(weight / (amax / 127)), atol=0, rtol=0
    )
    deq = dequantize_symmetric(parts, weight.shape, granularity)
    assert ((weight - deq).abs() <= scale / 2 * (1 + 1e-6)).all()
    assert parts["qdata"].dtype == torch.int8 and parts["qdata"].abs().max() == 127


@pytest.mark.parametrize("granularity", GRANULARITIES)
@pytest.mark.parametrize("bits", [8, 4])
def test_asymmetric_bound_range_and_zero(weight, granularity, bits):
    w = weight.clone()
    w[:, :16] = 0.0
    parts = quantize_asymmetric(w, bits, granularity)
    deq = dequantize_asymmetric(parts, w.shape, bits, granularity)
    scale = _per_element(parts["scale"], w.shape, granularity)
    assert ((w - deq).abs() <= scale / 2 * (1 + 1e-5)).all()
    assert (deq[:, :16] == 0).all()  # zero is on the grid
    assert parts["zero"].max() <= 2**bits - 1
    expected_width = w.shape[1] // 2 if bits == 4 else w.shape[1]
    assert parts["qdata"].shape == (w.shape[0], expected_width)


def test_int4_codes_pack_first_element_high_nibble():
    # one group [min .. max] = [0, 15]: scale 1, zero 0, so the codes are the values themselves
    w = torch.arange(32, dtype=torch.float32).remainder(16).reshape(1, 32)
    parts = quantize_asymmetric(w, 4, 32)
    assert parts["scale"].item() == 1.0 and parts["zero"].item() == 0
    assert parts["qdata"][0, :2].tolist() == [0x01, 0x23]


def test_asymmetric_uses_the_full_range_of_a_positive_group():
    w = torch.linspace(-1, 3, 128).reshape(1, 128)
    parts = quantize_asymmetric(w, 8, "channel")
    assert parts["scale"].item() == pytest.approx(4 / 255)
    assert parts["zero"].item() == round(1 / (4 / 255))


@pytest.mark.parametrize("quantize", [quantize_symmetric, quantize_asymmetric])
def test_group_that_does_not_divide_names_tensor_shape_and_group(quantize):
    with pytest.raises(
        LLMInternalsError, match=r"'blocks.1.mlp.up_proj.weight' of shape \(8, 96\).*128"
    ):
        quantize(torch.zeros(8, 96), 4, 128, "blocks.1.mlp.up_proj.weight")
