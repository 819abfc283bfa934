"""Parameter counting by component, checked against instantiated models and HF transformers."""

from __future__ import annotations

import pytest
import torch
import transformers

from llm_internals.models import DecoderLM, count_model_parameters, count_parameters
from llm_internals.models.hf_decoder import config_from_hf
from llm_internals.models.presets import PRESETS


def _hf_config(name: str) -> transformers.PretrainedConfig:
    """The same shapes written as HF configs (values of the public config.json files)."""
    if name == "gpt2-124m":
        return transformers.GPT2Config()
    if name == "smollm-135m":
        return transformers.LlamaConfig(
            vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
            num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=2048,
            rms_norm_eps=1e-5, tie_word_embeddings=True,
        )  # fmt: skip
    if name == "llama-3-8b":
        return transformers.LlamaConfig(
            vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
            num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=8192,
            rms_norm_eps=1e-5, rope_parameters={"rope_type": "default", "rope_theta": 500000.0},
        )  # fmt: skip
    return transformers.Qwen3Config(
        vocab_size=151936, hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
        num_attention_heads=16, num_key_value_heads=8, head_dim=128, max_position_embeddings=40960,
        tie_word_embeddings=True, rope_parameters={"rope_type": "default", "rope_theta": 1e6},
    )  # fmt: skip


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_counts_match_hf_models_of_real_shapes(name):
    hf_config = _hf_config(name)
    with torch.device("meta"):  # shapes only: an 8B model costs no memory here
        hf = transformers.AutoModelForCausalLM.from_config(hf_config)
        ours = DecoderLM(PRESETS[name]())
    hf_total = sum(p.numel() for p in hf.parameters())  # shared (tied) tensors counted once
    counts = count_parameters(PRESETS[name]())
    assert counts["total"] == hf_total
    assert count_model_parameters(ours) == counts
    assert count_parameters(config_from_hf(hf_config.to_dict(), name)) == counts


def test_components_add_up_and_gpt2_breakdown():
    counts = count_parameters(PRESETS["gpt2-124m"]())
    assert counts["embeddings"] == 50257 * 768 + 1024 * 768
    assert counts["lm_head"] == 0  # tied
    assert counts["attention"] == 12 * (4 * 768 * 768 + 4 * 768)
    assert counts["ffn"] == 12 * (2 * 768 * 3072 + 3072 + 768)
    assert counts["norms"] == 12 * 2 * 2 * 768 + 2 * 768
    assert sum(v for k, v in counts.items() if k != "total") == counts["total"]


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"tie_embeddings": True},
        {"qkv_bias": True, "attn_out_bias": True, "mlp_bias": True},
        {"ffn": "mlp", "norm": "layernorm", "position": "learned"},
        {"qk_norm": True, "n_kv_heads": 1},
    ],
)
def test_counts_match_instantiated_models(changes):
    config = PRESETS["smollm-135m"]().replace(n_layers=2, vocab_size=100, **changes)
    assert count_model_parameters(DecoderLM(config)) == count_parameters(config)
