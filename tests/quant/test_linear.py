"""QuantizedLinear: the general path is F.linear with the dequantised weight; torch's int8/int4 CPU
kernels (fast paths) agree with it; W8A8 against its formula; the model swap and its errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from llm_internals.errors import LLMInternalsError
from llm_internals.quant.linear import QuantizedLinear, cast_unquantized, quantize_model
from llm_internals.quant.schemes import SCHEMES, fake_quantize, get_scheme

ISSUE_SCHEMES = ["int8", "int8-zp", "int4-g32", "int4-g128", "fp8-e4m3", "fp8-e5m2", "mxfp4",
                 "nvfp4", "nf4", "w8a8", "bf16"]  # fmt: skip


@pytest.fixture
def linear() -> nn.Linear:
    torch.manual_seed(0)
    return nn.Linear(256, 48)


def test_registry_has_every_scheme_of_the_issue():
    assert set(ISSUE_SCHEMES) <= set(SCHEMES)


def test_unknown_scheme_lists_the_known_ones():
    with pytest.raises(LLMInternalsError) as err:
        get_scheme("int3")
    assert (
        "'int3'" in str(err.value)
        and "int4-g128" in err.value.hint
        and "--scheme" in err.value.hint
    )


@pytest.mark.parametrize("scheme", [s for s in ISSUE_SCHEMES if s not in ("w8a8", "bf16")])
def test_general_path_is_f_linear_with_the_dequantised_weight(linear, scheme):
    layer = QuantizedLinear.from_linear(linear, scheme)
    layer.use_kernel = False
    x = torch.randn(2, 3, 256)
    expected = F.linear(x, fake_quantize(linear.weight, SCHEMES[scheme]), linear.bias)
    torch.testing.assert_close(layer(x), expected, atol=0, rtol=0)
    # and the quantised weight is close to the original (a loose sanity bound for 4-bit)
    assert (
        layer.dequantized_weight() - linear.weight
    ).abs().max() < 0.25 * linear.weight.abs().max()


@pytest.mark.parametrize("scheme", ["int8", "int4-g32", "int4-g128"])
def test_cpu_kernels_equal_dequantise_then_matmul(linear, scheme):
    layer = cast_unquantized(QuantizedLinear.from_linear(linear, scheme), torch.bfloat16)
    x = torch.randn(5, 256, dtype=torch.bfloat16)
    fast = layer(x)
    if scheme != "int8":
        assert layer._int4 is not None  # the kernel path ran
    layer.use_kernel = False
    general = layer(x)
    # the same products summed in another order, rounded to bfloat16 (8 significant bits)
    torch.testing.assert_close(fast, general, atol=2e-2, rtol=2e-2)
    reference = F.linear(x.float(), layer.dequantized_weight(), linear.bias.detach())
    torch.testing.assert_close(fast.float(), reference, atol=3e-2, rtol=3e-2)


def test_int8_kernel_is_called(linear, monkeypatch):
    calls = []
    original = torch._weight_int8pack_mm
    monkeypatch.setattr(torch, "_weight_int8pack_mm", lambda *a: calls.append(1) or original(*a))
    layer = QuantizedLinear.from_linear(linear, "int8")
    layer(torch.randn(1, 256))
    assert not calls  # float32 activations: the general path
    layer(torch.randn(1, 256, dtype=torch.bfloat16))
    assert calls


def test_bf16_is_f_linear_in_bfloat16(linear):
    x = torch.randn(4, 256)
    w, b = linear.weight.to(torch.bfloat16), linear.bias.to(torch.bfloat16)
    expected = F.linear(x.to(torch.bfloat16), w, b).float()
    torch.testing.assert_close(
        QuantizedLinear.from_linear(linear, "bf16")(x), expected, atol=0, rtol=0
    )


def test_w8a8_quantises_activations_per_token(linear):
    x = torch.randn(3, 256)
    x[1] *= 50  # tokens with very different ranges each get their own scale
    w = linear.weight.detach()
    s_w = w.abs().amax(dim=1) / 127
    q_w = torch.round(w / s_w[:, None])
    s_x = x.abs().amax(dim=1) / 127
    q_x = torch.round(x / s_x[:, None])
    expected = (q_x @ q_w.T) * s_x[:, None] * s_w[None, :] + linear.bias
    out = QuantizedLinear.from_linear(linear, "w8a8")(x)
    torch.testing.assert_close(out, expected.detach(), atol=1e-5, rtol=1e-5)


def test_quantize_model_swaps_linears_and_fails_without_changing_the_model():
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Sequential(nn.Linear(32, 32)))
    replaced = quantize_model(model, "int4-g32")
    assert replaced == ["0", "2.0"]
    assert isinstance(model[0], QuantizedLinear) and isinstance(model[2][0], QuantizedLinear)
    bad = nn.Sequential(nn.Linear(128, 32), nn.Linear(32, 16))
    with pytest.raises(LLMInternalsError, match=r"'1.weight' of shape \(16, 32\).*group size 128"):
        quantize_model(bad, "int4-g128")
    assert all(isinstance(m, nn.Linear) for m in bad)  # nothing replaced


def test_quantize_output_head_computes_the_quantised_logits():
    from llm_internals.models.config import ModelConfig
    from llm_internals.models.decoder import DecoderLM
    from llm_internals.quant.linear import quantize_output_head

    torch.manual_seed(0)
    model = DecoderLM(ModelConfig(vocab_size=96, d_model=32, n_layers=1, n_heads=2)).eval()
    hidden = model.hidden_states(torch.tensor([[1, 2, 3]]))
    expected = F.linear(hidden, fake_quantize(model.lm_head.weight, SCHEMES["int8"]))
    quantize_output_head(model, "int8")
    assert isinstance(model.lm_head, QuantizedLinear)
    torch.testing.assert_close(model(torch.tensor([[1, 2, 3]])), expected, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("scheme", ["int8", "int4-g128"])
def test_kernel_activations_round_only_the_input_to_bf16(linear, scheme):
    from llm_internals.quant.linear import use_kernel_activations

    model = nn.Sequential(QuantizedLinear.from_linear(linear, scheme))
    use_kernel_activations(model)
    x = torch.randn(3, 256)
    out = model(x)
    assert out.dtype == torch.float32
    layer = model[0]
    expected = F.linear(x.bfloat16().float(), layer.dequantized_weight(), linear.bias.detach())
    torch.testing.assert_close(out, expected, atol=3e-2, rtol=3e-2)
    if scheme != "int8":
        assert layer._int4 is not None  # the kernel ran
