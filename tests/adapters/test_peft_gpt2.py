"""GPT-2-family adapters round-trip with the real PEFT library on the HF export: q/k/v LoRA
becomes one LoRA on the fused Conv1D c_attn (stacked A, block-diagonal B, rank and alpha in
rank_pattern / alpha_pattern), and a PEFT c_attn LoRA loads here as q, k, v; same logits (1e-5)."""

from __future__ import annotations

import peft
import pytest
import torch
import transformers
from safetensors.torch import load_file

from llm_internals.adapters import LoraSettings, inject_lora, load_adapter, save_adapter
from llm_internals.files import read_json
from llm_internals.models import DecoderLM, ModelConfig
from llm_internals.models.hf import save_pretrained

from .conftest import IDS, VOCAB, load_ours, randomize_adapters

GPT2_TINY = ModelConfig(vocab_size=VOCAB, d_model=32, n_layers=2, n_heads=4, family="gpt2",
                        position="learned", norm="layernorm", ffn="mlp", activation="gelu",
                        qkv_bias=True, attn_out_bias=True, mlp_bias=True)  # fmt: skip


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    """Our tiny GPT-2-family model, exported with models.save_pretrained."""
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("gpt2")
    save_pretrained(DecoderLM(GPT2_TINY).eval(), directory)
    return directory


@pytest.mark.parametrize("targets", ["q,v", "q,k,v,o,up,down"])
@pytest.mark.parametrize("rslora", [False, True])
def test_adapter_made_here_loads_in_peft_with_the_same_logits(gpt2_dir, tmp_path, targets, rslora):
    ours = load_ours(gpt2_dir)
    inject_lora(ours, LoraSettings(r=3, alpha=5, use_rslora=rslora), targets)
    randomize_adapters(ours)
    save_adapter(ours, tmp_path)
    hf = transformers.GPT2LMHeadModel.from_pretrained(gpt2_dir)
    with torch.no_grad():
        theirs = peft.PeftModel.from_pretrained(hf, tmp_path).eval()(input_ids=IDS).logits
        expected = ours(IDS)
    torch.testing.assert_close(expected, theirs, rtol=0, atol=1e-5)
    fused = 3 if "k" in targets else 2  # q, v or q, k, v of rank 3 each in c_attn
    tensors = load_file(tmp_path / "adapter_model.safetensors")
    c_attn = "base_model.model.transformer.h.1.attn.c_attn"
    assert tensors[f"{c_attn}.lora_A.weight"].shape == (3 * fused, 32)
    assert tensors[f"{c_attn}.lora_B.weight"].shape == (96, 3 * fused)
    config = read_json(tmp_path / "adapter_config.json")
    assert config["fan_in_fan_out"] is True and config["r"] == 3
    assert config["rank_pattern"] == {"c_attn": 3 * fused}
    # and back here: the file's c_attn becomes q, k, v of rank R sharing A, same logits
    again = load_ours(gpt2_dir)
    load_adapter(again, tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(again(IDS), expected, rtol=0, atol=1e-5)


def test_peft_adapter_on_hf_gpt2_loads_here_with_the_same_logits(tmp_path):
    torch.manual_seed(3)
    config = transformers.GPT2Config(vocab_size=VOCAB, n_positions=32, n_embd=32, n_layer=2,
                                     n_head=4, resid_pdrop=0, embd_pdrop=0,
                                     attn_pdrop=0)  # fmt: skip
    base = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():  # biases and norms away from their zero / one init
        for param in base.parameters():
            param.add_(torch.randn_like(param) * 0.05)
    base.save_pretrained(tmp_path / "base")
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "base")
    lora = peft.LoraConfig(r=4, lora_alpha=6, target_modules=["c_attn", "c_proj", "c_fc"],
                           rank_pattern={"c_attn": 6}, alpha_pattern={"c_attn": 9},
                           fan_in_fan_out=True, task_type="CAUSAL_LM")  # fmt: skip
    peft_model = peft.get_peft_model(hf, lora)
    randomize_adapters(peft_model, seed=5)
    peft_model.save_pretrained(tmp_path / "adapter")
    with torch.no_grad():
        expected = peft_model.eval()(input_ids=IDS).logits
    ours = load_ours(tmp_path / "base")
    adapted = load_adapter(ours, tmp_path / "adapter")
    assert len(adapted) == 12  # 2 layers x (q, k, v, o, up, down)
    attn = ours.blocks[0].attn
    assert [attn.q_proj.settings["default"].r, attn.o_proj.settings["default"].r] == [6, 4]
    with torch.no_grad():
        torch.testing.assert_close(ours(IDS), expected, rtol=0, atol=1e-5)
