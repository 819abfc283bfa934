"""NF4 (spec 7.2): the published table, nearest-code round trip, nibble order, double quantisation,
and the frozen NF4 linear layer against dequantise-then-F.linear."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from llm_internals.errors import LLMInternalsError
from llm_internals.quant.nf4 import (
    NF4_CODE,
    NF4Linear,
    dequantize_nf4,
    pack_nibbles,
    quantize_nf4,
    unpack_nibbles,
)

# Copied from the spec (bitsandbytes create_normal_map), not from our module.
PUBLISHED = [
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
    -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
    0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
    0.7229568362236023, 1.0,
]  # fmt: skip


def test_code_is_the_published_table():
    assert NF4_CODE.tolist() == torch.tensor(PUBLISHED, dtype=torch.float32).tolist()


def test_the_code_is_the_normal_quantile_construction():
    """Rebuild the table from its definition (bitsandbytes create_normal_map, offset 0.9677083):
    8 positive quantiles, 7 negative, and 0; normalised by the largest."""
    normal = torch.distributions.Normal(0.0, 1.0)
    offset = 0.9677083
    pos = normal.icdf(torch.linspace(offset, 0.5, 9, dtype=torch.float64)[:-1])
    neg = -normal.icdf(torch.linspace(offset, 0.5, 8, dtype=torch.float64)[:-1])
    values = torch.cat([pos, torch.zeros(1, dtype=torch.float64), neg]).sort().values
    values = values / values.abs().max()
    torch.testing.assert_close(values.float(), NF4_CODE, atol=2e-7, rtol=0)


def test_round_trip_maps_every_value_to_its_nearest_code_times_absmax():
    torch.manual_seed(0)
    w = torch.randn(8, 128)
    q = quantize_nf4(w)
    deq = dequantize_nf4(q)
    blocks, absmax = w.reshape(-1, 64), w.reshape(-1, 64).abs().amax(dim=1, keepdim=True)
    # brute force: distance to every code, pick the smallest
    nearest = NF4_CODE[((blocks / absmax)[..., None] - NF4_CODE).abs().argmin(dim=-1)] * absmax
    torch.testing.assert_close(deq.reshape(-1, 64), nearest, atol=0, rtol=0)
    # and the error bound from the format: half of the widest gap between codes, times absmax
    half_gap = (NF4_CODE[1:] - NF4_CODE[:-1]).max() / 2
    assert ((deq - w).reshape(-1, 64).abs() <= half_gap * absmax + 1e-6).all()


def test_nibble_order_first_value_in_the_high_nibble():
    codes = torch.tensor([1, 2, 15, 0], dtype=torch.uint8)
    packed = pack_nibbles(codes)
    assert packed.tolist() == [0x12, 0xF0]
    assert unpack_nibbles(packed).tolist() == codes.tolist()
    every = torch.randint(0, 16, (256,), dtype=torch.uint8)
    assert torch.equal(unpack_nibbles(pack_nibbles(every)), every)


def test_zero_block_and_exact_extremes():
    w = torch.zeros(2, 64)
    w[1, 3] = -2.5
    w[1, 7] = 2.5
    deq = dequantize_nf4(quantize_nf4(w))
    assert torch.equal(deq[0], torch.zeros(64))
    assert deq[1, 3].item() == -2.5 and deq[1, 7].item() == 2.5


def test_double_quantisation_reconstructs_absmax_within_one_percent():
    torch.manual_seed(1)
    # a weight-like matrix: std 0.02 with rows varying +-30% (640 blocks -> 3 scale blocks).
    # (With rows varying 15x the small absmaxes lose ~3%: int8 steps are set by the largest.)
    w = 0.02 * torch.randn(64, 640) * torch.linspace(0.7, 1.3, 64)[:, None]
    plain, double = quantize_nf4(w), quantize_nf4(w, double_quant=True)
    rel = (double.scales() - plain.scales()).abs() / plain.scales()
    assert rel.max() < 0.01
    assert double.absmax_q.dtype == torch.int8 and double.absmax_scale.numel() == 3
    # overhead: 8/64 + 32/(64*256) bits per weight (+ one fp32 mean), vs 32/64
    scale_bits = (double.nbytes() - double.packed.numel()) * 8 / w.numel()
    assert scale_bits == pytest.approx(8 / 64 + 32 / (64 * 256) + 32 / w.numel(), rel=0.01)


def test_nf4_linear_matches_dequantised_f_linear_and_is_frozen():
    torch.manual_seed(2)
    linear = nn.Linear(128, 32)
    layer = NF4Linear(linear, double_quant=True)
    x = torch.randn(3, 5, 128, requires_grad=True)
    q = quantize_nf4(linear.weight, double_quant=True)
    expected = nn.functional.linear(x, dequantize_nf4(q), linear.bias)
    out = layer(x)
    torch.testing.assert_close(out, expected, atol=0, rtol=0)
    assert list(layer.parameters()) == []
    out.sum().backward()
    assert x.grad is not None  # gradients flow to the input (and so to LoRA adapters), not to W
    assert {"nf4_packed", "nf4_absmax_q", "bias"} <= set(layer.state_dict())


def test_block_that_does_not_divide_names_the_tensor():
    with pytest.raises(LLMInternalsError, match=r"'blocks.0.ffn.up.weight'.*\(3, 10\).*64"):
        quantize_nf4(torch.zeros(3, 10), name="blocks.0.ffn.up.weight")
