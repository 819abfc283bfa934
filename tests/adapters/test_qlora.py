"""QLoRA: LoRA on an NF4 base computes exactly LoRA on the dequantised base; only A and B learn;
training_bytes against counts made here from the shapes (spec 7.2)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from llm_internals.adapters import LoraSettings, inject_lora, training_bytes
from llm_internals.adapters.qlora import quantize_base_nf4
from llm_internals.errors import LLMInternalsError
from llm_internals.models import DecoderLM, ModelConfig

from .conftest import IDS, randomize_adapters

CONFIG = ModelConfig(vocab_size=96, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=128)


def _model() -> DecoderLM:
    torch.manual_seed(0)
    return DecoderLM(CONFIG).eval()


@pytest.mark.parametrize("double_quant", [False, True])
def test_qlora_forward_equals_lora_on_the_dequantised_base(double_quant):
    qlora = _model()
    quantize_base_nf4(qlora, double_quant=double_quant)
    inject_lora(qlora, LoraSettings(r=4, alpha=8), "all-linear")
    randomize_adapters(qlora)
    reference = _model()
    with torch.no_grad():  # the same model with each NF4 weight written back dequantised
        for name, module in qlora.named_modules():
            if hasattr(module, "dequantized_weight"):
                reference.get_submodule(name.removesuffix(".base")).weight.copy_(
                    module.dequantized_weight()
                )
        changed = reference.blocks[0].attn.q_proj.weight - _model().blocks[0].attn.q_proj.weight
        assert changed.abs().max() > 1e-4  # quantisation really happened
    inject_lora(reference, LoraSettings(r=4, alpha=8), "all-linear")
    randomize_adapters(reference)
    with torch.no_grad():
        torch.testing.assert_close(qlora(IDS), reference(IDS), rtol=0, atol=1e-5)


def test_gradients_reach_only_the_adapters():
    model = _model()
    quantize_base_nf4(model)
    inject_lora(model, LoraSettings(r=4, alpha=8), "all-linear")
    randomize_adapters(model)
    model(IDS).logsumexp(-1).mean().backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    assert with_grad and all(".lora_A." in n or ".lora_B." in n for n in with_grad)
    assert len(with_grad) == 2 * 7 * CONFIG.n_layers
    assert not any(b.requires_grad for b in model.buffers())


def test_training_bytes_full_lora_and_qlora():
    full = training_bytes(_model())
    n = sum(p.numel() for p in _model().parameters())
    assert (full.weights, full.gradients, full.adam_states) == (4 * n, 4 * n, 8 * n)

    lora = _model()
    inject_lora(lora, LoraSettings(r=8), "q,v")
    q_in, q_out = 64, 4 * 16
    v_in, v_out = 64, 2 * 16
    adapter = CONFIG.n_layers * 8 * ((q_in + q_out) + (v_in + v_out))
    counted = training_bytes(lora)
    assert counted.trainable_params == adapter
    assert (counted.gradients, counted.adam_states) == (4 * adapter, 8 * adapter)
    assert counted.weights == 4 * (n + adapter)

    qlora = _model()
    block_linear = sum(m.weight.numel() for m in qlora.blocks.modules() if isinstance(m, nn.Linear))
    quantize_base_nf4(qlora, double_quant=False)
    nf4 = training_bytes(qlora)
    # each block weight: half a byte per value plus an fp32 absmax per 64 values
    assert nf4.weights == 4 * (n - block_linear) + block_linear // 2 + 4 * block_linear // 64
    assert (nf4.total_params, nf4.trainable_params) == (n, 0)


def test_nf4_block_that_does_not_fit_names_the_layer():
    odd = DecoderLM(ModelConfig(vocab_size=32, d_model=36, n_layers=1, n_heads=2, d_ff=36))
    with pytest.raises(LLMInternalsError, match=r"shape \(36, 36\)"):
        quantize_base_nf4(odd)
