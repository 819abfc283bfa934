"""The KV-cache calculator agrees with the bytes HF transformers actually allocates, reads real
config.json files of several families, and fails clearly on bad input."""

import json

import pytest
import torch
import transformers

from llm_internals.cli import main
from llm_internals.errors import LLMInternalsError
from llm_internals.inference.kv_memory import (
    PRESETS,
    kv_cache_bytes,
    load_shape,
    normalize_dtype,
    shape_from_hf_config,
    shape_from_model_config,
)
from llm_internals.models.config import ModelConfig

TINY_CONFIGS = {
    "llama-gqa": lambda: transformers.LlamaConfig(
        vocab_size=64, hidden_size=64, intermediate_size=64, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2,
    ),
    "gpt2-mha": lambda: transformers.GPT2Config(vocab_size=64, n_embd=48, n_layer=2, n_head=3),
    "qwen2-gqa": lambda: transformers.Qwen2Config(
        vocab_size=64, hidden_size=64, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=8, num_key_value_heads=2,
    ),
    "qwen3-explicit-head-dim": lambda: transformers.Qwen3Config(
        vocab_size=64, hidden_size=64, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=1, head_dim=24,
    ),
    "falcon-mqa": lambda: transformers.FalconConfig(
        vocab_size=64, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
        multi_query=True, new_decoder_architecture=False,
    ),
}  # fmt: skip


def hf_cache_bytes(model, batch: int, tokens: int) -> int:
    """Bytes of the K and V tensors HF's DynamicCache holds after a forward pass."""
    input_ids = torch.randint(0, model.config.vocab_size, (batch, tokens))
    with torch.no_grad():
        cache = model(input_ids, use_cache=True).past_key_values
    return sum(
        t.numel() * t.element_size() for layer in cache.layers for t in (layer.keys, layer.values)
    )


@pytest.mark.parametrize("family", sorted(TINY_CONFIGS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_formula_equals_hf_cache_allocation(tmp_path, family, dtype):
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(TINY_CONFIGS[family]()).to(dtype).eval()
    model.save_pretrained(tmp_path)  # writes config.json with the dtype, as a real checkpoint
    shape = load_shape(tmp_path)
    assert shape.dtype == str(dtype).removeprefix("torch.")
    for batch, tokens in ((1, 5), (3, 11)):
        assert shape.cache_bytes(tokens, batch) == hf_cache_bytes(model, batch, tokens)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_read_the_same_shape_hf_derives_from_the_config(name):
    preset = dict(PRESETS[name])
    config_class = transformers.AutoConfig.for_model(preset.pop("model_type")).__class__
    hf = config_class(**preset)
    shape = shape_from_hf_config(PRESETS[name], name)
    assert shape.layers == hf.num_hidden_layers
    assert shape.heads == hf.num_attention_heads
    head_dim = getattr(hf, "head_dim", None) or hf.hidden_size // hf.num_attention_heads
    assert shape.head_dim == head_dim
    if getattr(hf, "multi_query", False):
        assert shape.kv_heads == 1  # HF's Falcon attention uses one KV head with multi_query
    else:
        assert shape.kv_heads == getattr(hf, "num_key_value_heads", hf.num_attention_heads)


def test_published_per_token_figures():
    # Widely quoted: Llama-3-8B keeps 128 KiB per token in bf16 (32 layers x 8 KV heads x 128);
    # Llama-3-70B 320 KiB; GPT-2 small 72 KiB in fp32 (12 layers x 768 x 2 x 4 bytes).
    assert load_shape("llama-3-8b").bytes_per_token == 2 * 32 * 8 * 128 * 2 == 128 * 1024
    assert load_shape("llama-3-70b").bytes_per_token == 2 * 80 * 8 * 128 * 2 == 320 * 1024
    assert load_shape("gpt2").bytes_per_token == 2 * 12 * 768 * 4 == 72 * 1024
    assert load_shape("llama-3-8b", dtype="fp32").bytes_per_token == 256 * 1024


def test_model_config_and_formula():
    config = ModelConfig(vocab_size=100, d_model=64, n_layers=4, n_heads=8, n_kv_heads=2)
    shape = shape_from_model_config(config, dtype="bfloat16")
    assert (shape.layers, shape.kv_heads, shape.head_dim, shape.bytes_per_element) == (4, 2, 8, 2)
    assert (
        shape.cache_bytes(100, 3)
        == kv_cache_bytes(4, 2, 8, 100, 3, 2)
        == 2 * 4 * 2 * 8 * (100 * 3) * 2
    )


def test_text_config_of_multimodal_checkpoints_is_used():
    config = {"model_type": "llava", "text_config": PRESETS["llama-3-8b"]}
    assert shape_from_hf_config(config).bytes_per_token == 128 * 1024


def test_bad_input_names_the_problem(tmp_path):
    with pytest.raises(LLMInternalsError, match="neither a preset nor an existing config"):
        load_shape(tmp_path / "missing.json")
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{oops")
    with pytest.raises(LLMInternalsError, match="bad.json: malformed JSON"):
        load_shape(bad_json)
    no_layers = tmp_path / "config.json"
    no_layers.write_text(json.dumps({"num_attention_heads": 4, "hidden_size": 64}))
    with pytest.raises(LLMInternalsError, match="missing field num_hidden_layers"):
        load_shape(tmp_path)
    with pytest.raises(LLMInternalsError, match="field num_key_value_heads must be a positive"):
        shape_from_hf_config(
            {"num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 0,
             "hidden_size": 64}
        )  # fmt: skip
    with pytest.raises(LLMInternalsError, match="not divisible"):
        shape_from_hf_config({"num_hidden_layers": 2, "num_attention_heads": 5, "hidden_size": 64})
    with pytest.raises(LLMInternalsError, match="unknown dtype 'float13'"):
        normalize_dtype("float13")
    with pytest.raises(LLMInternalsError, match="tokens must be a positive integer"):
        load_shape("gpt2").cache_bytes(0, 1)


def test_cli_prints_the_total_and_per_token_bytes(capsys):
    assert main(["kv-memory", "llama-3-8b", "--tokens", "8k", "--batch", "4"]) == 0
    out = capsys.readouterr().out
    total = 2 * 32 * 8 * 128 * 8192 * 4 * 2
    assert f"{total:,} bytes" in out and "4 GiB" in out and "128 KiB" in out
    assert main(["kv-memory", "all", "--tokens", "4096", "131072"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in PRESETS)


def test_cli_errors_are_one_line(capsys):
    assert main(["kv-memory", "no-such-model"]) == 2
    assert main(["kv-memory", "gpt2", "--tokens", "-5"]) == 2
    assert main(["kv-memory", "gpt2", "--batch", "0"]) == 2
    out = capsys.readouterr().out
    assert "Traceback" not in out and out.count("error:") == 3
