"""LoraLinear against PEFT's own lora.Linear on the same weights (spec 7.1): init, scaling,
rsLoRA, dropout placement, merge/unmerge, gradients at step 0, parameter counts, adapters."""

from __future__ import annotations

import math

import peft
import pytest
import torch
from peft.tuners.lora.layer import Linear as PeftLinear
from torch import nn

from llm_internals.adapters import LoraLinear, LoraSettings
from llm_internals.errors import LLMInternalsError

IN, OUT = 24, 16


def _base(seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(IN, OUT)


def _pair(settings: LoraSettings) -> tuple[LoraLinear, PeftLinear]:
    """Ours and PEFT's layer on identical base weights, with identical random A and B."""
    ours = LoraLinear(_base())
    ours.add_adapter("default", settings)
    kwargs = dict(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                  use_rslora=settings.use_rslora)  # fmt: skip
    ref = PeftLinear(_base(), "default", peft.LoraConfig(**kwargs), **kwargs)
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for kind in ("lora_A", "lora_B"):
            shape = getattr(ours, kind)["default"].weight.shape
            value = 0.1 * torch.randn(shape, generator=generator)  # a trained adapter's size
            getattr(ours, kind)["default"].weight.copy_(value)
            getattr(ref, kind)["default"].weight.copy_(value)
    return ours, ref


def test_initialisation_is_the_base_and_a_is_kaiming_uniform():
    layer = LoraLinear(_base())
    layer.add_adapter("default", LoraSettings(r=64, alpha=16))
    x = torch.randn(5, IN)
    assert torch.equal(layer(x), layer.base(x))  # B = 0: exactly the base output
    assert torch.count_nonzero(layer.lora_B["default"].weight) == 0
    a = layer.lora_A["default"].weight
    bound = 1 / math.sqrt(IN)  # kaiming_uniform(a=sqrt 5): gain sqrt(1/3) * sqrt(3 / fan_in)
    assert a.abs().max() <= bound
    assert a.abs().max() > 0.95 * bound  # 64 * 24 uniform draws reach the edge
    assert abs(a.std().item() - bound / math.sqrt(3)) < 0.1 * bound


@pytest.mark.parametrize(
    "settings",
    [LoraSettings(r=4, alpha=16), LoraSettings(r=4, alpha=16, use_rslora=True),
     LoraSettings(r=8, alpha=8), LoraSettings(r=3, alpha=7.5, use_rslora=True)],
)  # fmt: skip
def test_forward_and_scaling_match_peft(settings):
    ours, ref = _pair(settings)
    assert ours.settings["default"].scaling == ref.scaling["default"]
    x = torch.randn(3, 5, IN)
    torch.testing.assert_close(ours(x), ref(x), rtol=0, atol=1e-6)


def test_dropout_applies_to_the_adapter_input_only_as_in_peft():
    ours, ref = _pair(LoraSettings(r=4, alpha=8, dropout=0.5))
    ours.train()
    ref.train()
    x = torch.randn(4, IN)
    torch.manual_seed(3)
    got = ours(x)
    torch.manual_seed(3)
    torch.testing.assert_close(got, ref(x), rtol=0, atol=1e-6)
    assert not torch.allclose(got, ours.base(x) + ours.delta_weight("default").matmul(x.T).T)


def test_adapters_follow_the_mode_of_the_layer_they_wrap():
    base = _base().eval()
    layer = LoraLinear(base)
    layer.add_adapter("default", LoraSettings(r=4, alpha=8, dropout=0.5))
    nn.init.normal_(layer.lora_B["default"].weight)
    x = torch.randn(4, IN)
    assert not layer.training
    torch.testing.assert_close(layer(x), layer(x), rtol=0, atol=0)  # no dropout in eval mode


def test_merged_forward_equals_adapter_forward_and_unmerge_restores_the_weight():
    ours, ref = _pair(LoraSettings(r=4, alpha=16))
    x = torch.randn(6, IN)
    before = ours.base.weight.detach().clone()
    unmerged = ours(x)
    ours.merge()
    assert ours.merged == "default"
    torch.testing.assert_close(ours(x), unmerged, rtol=0, atol=1e-6)
    ref.merge()
    torch.testing.assert_close(ours.base.weight, ref.base_layer.weight, rtol=0, atol=1e-6)
    ours.unmerge()
    # one fp32 rounding of (W + d) and one of the subtraction: within 2 ulp of max(|W|, |W + d|)
    bound = 2 * torch.finfo(torch.float32).eps * (before.abs() + ours.delta_weight("default").abs())
    assert ((ours.base.weight - before).abs() <= bound).all()
    torch.testing.assert_close(ours(x), unmerged, rtol=0, atol=1e-6)


def test_gradients_at_step_zero_reach_b_only():
    layer = LoraLinear(_base())
    layer.add_adapter("default", LoraSettings(r=4, alpha=8))
    layer(torch.randn(5, IN)).square().sum().backward()
    assert torch.count_nonzero(layer.lora_A["default"].weight.grad) == 0
    assert torch.count_nonzero(layer.lora_B["default"].weight.grad) > 0
    assert layer.base.weight.grad is None and layer.base.bias.grad is None
    trainable = sum(p.numel() for p in layer.parameters() if p.requires_grad)
    assert trainable == 4 * (IN + OUT)  # r (k + d)


def test_several_adapters_one_active():
    layer = LoraLinear(_base())
    for name, r in (("a", 2), ("b", 5)):
        layer.add_adapter(name, LoraSettings(r=r, alpha=4))
        nn.init.normal_(layer.lora_B[name].weight)
    x = torch.randn(3, IN)
    outputs = {}
    for name in ("a", "b", None):
        layer.set_adapter(name)
        outputs[name] = layer(x)
    for name in ("a", "b"):
        expected = layer.base(x) + x @ layer.delta_weight(name).T
        torch.testing.assert_close(outputs[name], expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(outputs[None], layer.base(x), rtol=0, atol=0)
    layer.set_adapter("a")
    layer.merge()
    with pytest.raises(LLMInternalsError, match="unmerge"):
        layer.set_adapter("b")
    with pytest.raises(LLMInternalsError, match="'c' is not loaded"):
        layer.set_adapter("c")


def test_bad_settings_name_the_flag():
    with pytest.raises(LLMInternalsError) as err:
        LoraSettings(r=0)
    assert "--lora-r" in err.value.hint
