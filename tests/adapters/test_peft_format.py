"""Adapter folders round-trip with the real PEFT library on the HF export of the same base, in
both directions, with the same logits (fp32, 1e-5); bad adapters fail with one clear error."""

from __future__ import annotations

import peft
import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file

from llm_internals.adapters import (
    LoraSettings,
    inject_lora,
    load_adapter,
    save_adapter,
    set_adapter,
)
from llm_internals.errors import LLMInternalsError
from llm_internals.files import read_json
from llm_internals.models import DecoderLM, ModelConfig
from llm_internals.models.hf import save_pretrained

from .conftest import IDS, load_ours, make_hf_llama, randomize_adapters


def _peft_logits(base_dir, adapter_dir) -> torch.Tensor:
    hf = transformers.LlamaForCausalLM.from_pretrained(base_dir)
    with torch.no_grad():
        return peft.PeftModel.from_pretrained(hf, adapter_dir).eval()(input_ids=IDS).logits


def test_adapter_trained_here_loads_in_peft_with_the_same_logits(llama_dir, tmp_path):
    ours = load_ours(llama_dir)
    inject_lora(ours, LoraSettings(r=4, alpha=8, use_rslora=True), "all-linear")
    randomize_adapters(ours)
    save_adapter(ours, tmp_path, base_model_name_or_path=str(llama_dir))
    with torch.no_grad():
        torch.testing.assert_close(ours(IDS), _peft_logits(llama_dir, tmp_path), rtol=0, atol=1e-5)
    names = load_file(tmp_path / "adapter_model.safetensors")
    a = names["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"]
    b = names["base_model.model.model.layers.1.mlp.down_proj.lora_B.weight"]
    assert a.shape == (4, 64) and b.shape == (64, 4)
    config = read_json(tmp_path / "adapter_config.json")
    assert config["peft_type"] == "LORA" and config["task_type"] == "CAUSAL_LM"
    assert sorted(config["target_modules"]) == sorted(
        f"{p}_proj" for p in ("q", "k", "v", "o", "gate", "up", "down")
    )


def test_peft_adapter_loads_here_with_the_same_logits(llama_dir, tmp_path):
    hf = transformers.LlamaForCausalLM.from_pretrained(llama_dir)
    config = peft.LoraConfig(r=4, lora_alpha=12, target_modules=["q_proj", "v_proj", "down_proj"],
                             task_type="CAUSAL_LM")  # fmt: skip
    peft_model = peft.get_peft_model(hf, config)
    randomize_adapters(peft_model, seed=5)
    peft_model.save_pretrained(tmp_path)
    with torch.no_grad():
        expected = peft_model.eval()(input_ids=IDS).logits
    ours = load_ours(llama_dir)
    adapted = load_adapter(ours, tmp_path)
    assert len(adapted) == 6  # 2 layers x (q, v, down)
    with torch.no_grad():
        torch.testing.assert_close(ours(IDS), expected, rtol=0, atol=1e-5)


def test_interleaved_rope_layout_permutes_b_rows_for_q_and_k(tmp_path):
    """A model in Meta's layout exports q/k rows permuted; B must follow, A must not."""
    config = ModelConfig(vocab_size=96, d_model=64, n_layers=1, n_heads=4, n_kv_heads=2,
                         d_ff=128, family="llama", rope_layout="interleaved")  # fmt: skip
    torch.manual_seed(0)
    ours = DecoderLM(config).eval()
    save_pretrained(ours, tmp_path / "base")
    inject_lora(ours, LoraSettings(r=4, alpha=8), "q,k,v")
    randomize_adapters(ours)
    save_adapter(ours, tmp_path / "adapter")
    with torch.no_grad():
        expected = ours(IDS)
    torch.testing.assert_close(
        expected, _peft_logits(tmp_path / "base", tmp_path / "adapter"), rtol=0, atol=1e-5
    )


def test_several_adapters_loaded_one_active(llama_dir, tmp_path):
    ours = load_ours(llama_dir)
    for seed, name in ((1, "first"), (2, "second")):
        other = load_ours(llama_dir)
        inject_lora(other, LoraSettings(r=2 * seed, alpha=8), "q,o,up")
        randomize_adapters(other, seed)
        save_adapter(other, tmp_path / name)
        load_adapter(ours, tmp_path / name, name=name)
    for name in ("first", "second"):
        set_adapter(ours, name)
        with torch.no_grad():
            got = ours(IDS)
        torch.testing.assert_close(got, _peft_logits(llama_dir, tmp_path / name), rtol=0, atol=1e-5)
    set_adapter(ours, None)
    with torch.no_grad():
        torch.testing.assert_close(ours(IDS), load_ours(llama_dir)(IDS), rtol=0, atol=0)


def _adapter_for(model, directory):
    inject_lora(model, LoraSettings(r=4, alpha=8), "q,v")
    save_adapter(model, directory)
    return directory


def test_adapter_for_another_base_names_module_tensor_and_shapes(llama_dir, tmp_path):
    deeper = tmp_path / "deeper"
    make_hf_llama(num_hidden_layers=3).save_pretrained(deeper)
    adapter = _adapter_for(load_ours(deeper), tmp_path / "a3")
    with pytest.raises(LLMInternalsError) as err:
        load_adapter(load_ours(llama_dir), adapter)
    assert "model.layers.2.self_attn" in err.value.message and "does not have" in err.value.message
    assert "--model" in err.value.hint

    wider = tmp_path / "wider"
    make_hf_llama(hidden_size=128, head_dim=32).save_pretrained(wider)
    adapter = _adapter_for(load_ours(wider), tmp_path / "w")
    with pytest.raises(LLMInternalsError) as err:
        load_adapter(load_ours(llama_dir), adapter)
    message = err.value.message
    assert "lora_A.weight" in message and "(4, 128)" in message and "(4, 64)" in message


def test_damaged_adapter_folders(llama_dir, tmp_path):
    adapter = _adapter_for(load_ours(llama_dir), tmp_path / "a")
    tensors = load_file(adapter / "adapter_model.safetensors")
    key = next(k for k in tensors if k.endswith("lora_B.weight"))
    save_file({k: v for k, v in tensors.items() if k != key}, adapter / "adapter_model.safetensors")
    with pytest.raises(LLMInternalsError, match="has no lora_B tensor"):
        load_adapter(load_ours(llama_dir), adapter)
    with pytest.raises(LLMInternalsError, match="adapter_config.json"):
        load_adapter(load_ours(llama_dir), tmp_path)
    model = load_ours(llama_dir)
    before = {n: p.clone() for n, p in model.state_dict().items()}
    with pytest.raises(LLMInternalsError):
        load_adapter(model, adapter)
    assert model.state_dict().keys() == before.keys()  # nothing was wrapped before the check


def test_targets_that_match_nothing_name_the_target_and_the_layers():
    gpt_style = ModelConfig(vocab_size=32, d_model=32, n_layers=1, n_heads=2, ffn="mlp",
                            activation="gelu", norm="layernorm", position="learned")  # fmt: skip
    with pytest.raises(LLMInternalsError) as err:
        inject_lora(DecoderLM(gpt_style), LoraSettings(), "q,gate")
    assert "gate_proj" in err.value.message and "up_proj" in err.value.message
    assert "--targets" in err.value.hint
    with pytest.raises(LLMInternalsError, match="unknown LoRA target 'lm_head'"):
        inject_lora(DecoderLM(gpt_style), LoraSettings(), "q,lm_head")


def test_model_without_hf_export_uses_our_names_and_round_trips_here(llama_dir, tmp_path):
    """No biases: GPT-2-shaped but not GPT-2, so there are no HF names to write."""
    gpt_style = ModelConfig(vocab_size=96, d_model=32, n_layers=1, n_heads=2, ffn="mlp",
                            activation="gelu", norm="layernorm", position="learned")  # fmt: skip
    torch.manual_seed(0)
    model = DecoderLM(gpt_style).eval()
    inject_lora(model, LoraSettings(r=2), "all-linear")  # all-linear takes what the model has
    randomize_adapters(model)
    save_adapter(model, tmp_path)
    assert "base_model.model.blocks.0.ffn.up_proj.lora_A.weight" in load_file(
        tmp_path / "adapter_model.safetensors"
    )
    torch.manual_seed(0)
    fresh = DecoderLM(gpt_style).eval()
    load_adapter(fresh, tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(fresh(IDS), model(IDS), rtol=0, atol=0)
    assert read_json(tmp_path / "adapter_config.json")["llm_internals_module_names"] is True
    with pytest.raises(LLMInternalsError, match="no HF export") as err:
        load_adapter(load_ours(llama_dir), tmp_path)
    assert "--model" in err.value.hint
