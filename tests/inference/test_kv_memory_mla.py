"""KV bytes per token for Multi-head Latent Attention against GQA and MHA: a DeepSeek-V3 config as
transformers builds it (its defaults are V3's shapes) caches 576 values per token per layer, our
ModelConfig with V3's mla fields the same, and the `kv-memory` command prints the latent formula."""

from __future__ import annotations

import json

import transformers

from llm_internals.cli import main
from llm_internals.inference.kv_layout import kv_layout
from llm_internals.inference.kv_memory import (
    load_shape,
    shape_from_hf_config,
    shape_from_model_config,
)
from llm_internals.models.config import ModelConfig

V3_MLA = dict(kv_lora_rank=512, q_lora_rank=1536, qk_nope_head_dim=128, qk_rope_head_dim=64,
              v_head_dim=128)  # fmt: skip


def v3_hf_config() -> dict:
    config = transformers.DeepseekV3Config()
    assert (config.num_hidden_layers, config.kv_lora_rank, config.qk_rope_head_dim) == (61, 512, 64)
    return config.to_dict() | {"torch_dtype": "bfloat16"}


def test_deepseek_v3_caches_576_values_per_token_per_layer():
    shape = shape_from_hf_config(v3_hf_config(), "deepseek-v3")
    assert shape.values_per_token_per_layer == 576
    assert shape.bytes_per_token == 61 * 576 * 2 == 70_272  # ~70 KB per token in bf16
    mha = 2 * 128 * 128  # a key and a value of 128 values for each of 128 heads
    assert mha / shape.values_per_token_per_layer > 56


def test_our_config_with_v3_mla_fields():
    config = ModelConfig(vocab_size=32, d_model=7168, n_layers=61, n_heads=128, mla=V3_MLA)
    assert kv_layout(config).values_per_token == 576
    shape = shape_from_model_config(config, dtype="bfloat16")
    assert shape.bytes_per_token == 61 * 576 * 2
    gqa = shape_from_model_config(config.replace(mla=None, n_kv_heads=8), dtype="bfloat16")
    assert gqa.bytes_per_token == 61 * 2 * 8 * 56 * 2  # head_dim 7168 / 128 = 56


def test_cli_prints_the_latent_formula(tmp_path, capsys):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(v3_hf_config()))
    assert main(["kv-memory", str(path), "--tokens", "4k"]) == 0
    out = capsys.readouterr().out
    total = 61 * 576 * 4096 * 2
    assert "576 (MLA latent)" in out and f"{total:,} bytes" in out


def test_published_deepseek_v3_against_llama_3_70b():
    v3, llama = load_shape("deepseek-v3"), load_shape("llama-3-70b")
    assert v3.values_per_token_per_layer == 576 and v3.bytes_per_token == 70_272
    assert llama.bytes_per_token == 80 * 2 * 8 * 128 * 2  # GQA-8: 320 KiB per token
    assert llama.bytes_per_token / v3.bytes_per_token > 4.6  # a 671B model caches 4.7x less
