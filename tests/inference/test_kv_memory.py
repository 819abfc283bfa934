"""The KV-cache calculator agrees with the bytes HF transformers actually allocates, reads real
config.json files of several families, and fails clearly on bad input."""

import json

import pytest
import torch
import transformers

from llm_internals.cli import main
from llm_internals.errors import LLMInternalsError
from llm_internals.inference.kv_cache import ContiguousKVCache
from llm_internals.inference.kv_memory import (
    kv_cache_bytes,
    load_shape,
    normalize_dtype,
    shape_from_hf_config,
    shape_from_model_config,
)
from llm_internals.models import DecoderLM, load_pretrained, save_checkpoint, save_pretrained
from llm_internals.models.config import ModelConfig
from llm_internals.models.encoder import EncoderLM
from llm_internals.models.published import decoders, hf_config
from llm_internals.tokenizer.char import CharTokenizer
from llm_internals.training.checkpoint import save_training_checkpoint
from llm_internals.training.config import TrainConfig

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


@pytest.mark.parametrize("name", decoders())
def test_published_decoders_read_the_same_shape_hf_derives_from_the_config(name):
    hf = transformers.AutoConfig.for_model(**hf_config(name))
    shape = load_shape(name)
    assert shape.layers == hf.num_hidden_layers
    assert shape.heads == hf.num_attention_heads
    head_dim = getattr(hf, "head_dim", None) or hf.hidden_size // hf.num_attention_heads
    if getattr(hf, "kv_lora_rank", None):  # MLA (DeepSeek-V3): the latent is cached, no heads
        assert shape.latent_dim == hf.kv_lora_rank + hf.qk_rope_head_dim
    else:
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
    config = {"model_type": "llava", "text_config": hf_config("llama-3-8b")}
    assert shape_from_hf_config(config).bytes_per_token == 128 * 1024


def test_bad_input_names_the_problem(tmp_path):
    with pytest.raises(LLMInternalsError, match="neither a published model nor an existing path"):
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
    assert all(name in out for name in decoders())


def test_cli_errors_are_one_line(capsys):
    assert main(["kv-memory", "no-such-model"]) == 2
    assert main(["kv-memory", "gpt2", "--tokens", "-5"]) == 2
    assert main(["kv-memory", "gpt2", "--batch", "0"]) == 2
    out = capsys.readouterr().out
    assert "Traceback" not in out and out.count("error:") == 3


# Every config the project itself writes, and the bytes our own cache allocates for it.
TINY = ModelConfig(vocab_size=40, d_model=32, n_layers=3, n_heads=4, n_kv_heads=2, max_seq_len=16)


def our_cache_bytes(folder, batch: int, tokens: int) -> int:
    """Bytes of the ContiguousKVCache our generate allocates for the model in `folder`."""
    model = load_pretrained(folder)
    return ContiguousKVCache.for_model(model, batch=batch, max_len=tokens).nbytes()


def test_our_checkpoint_folder_and_its_config_json(tmp_path):
    torch.manual_seed(0)
    save_checkpoint(DecoderLM(TINY), tmp_path)
    for source in (tmp_path, tmp_path / "config.json"):
        assert load_shape(source).cache_bytes(7, 2) == our_cache_bytes(tmp_path, 2, 7)


def test_bare_model_config_json(tmp_path):
    TINY.save(tmp_path / "model.json")
    shape = load_shape(tmp_path / "model.json")
    assert (shape.layers, shape.heads, shape.kv_heads, shape.head_dim) == (3, 4, 2, 8)
    torch.manual_seed(0)
    save_checkpoint(DecoderLM(TINY), tmp_path / "ckpt")
    assert shape.cache_bytes(5, 3) == our_cache_bytes(tmp_path / "ckpt", 3, 5)


def test_training_run_folder_and_step_folder(tmp_path):
    torch.manual_seed(0)
    model = DecoderLM(TINY)
    optimizer = torch.optim.AdamW(model.parameters())
    step_dir = save_training_checkpoint(
        tmp_path, 3, model, optimizer, TrainConfig(), CharTokenizer.train("abc"), {}
    )
    expected = our_cache_bytes(step_dir, 1, 9)
    assert load_shape(tmp_path).cache_bytes(9) == load_shape(step_dir).cache_bytes(9) == expected


def test_cli_reads_our_run_folder_and_help_lists_the_published_models(tmp_path, capsys):
    torch.manual_seed(0)
    model = DecoderLM(TINY)
    optimizer = torch.optim.AdamW(model.parameters())
    save_training_checkpoint(
        tmp_path, 1, model, optimizer, TrainConfig(), CharTokenizer.train("abc"), {}
    )
    assert main(["kv-memory", str(tmp_path), "--tokens", "10"]) == 0
    total = 2 * 3 * 2 * 8 * 10 * 4  # layers x kv heads x head_dim x tokens x float32
    assert f"= {total:,} bytes" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["kv-memory", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert all(alias in help_text for alias in ("gpt2", "llama-3-8b", "qwen3-0.6b", "mistral-7b"))


def test_our_hf_export(tmp_path):
    torch.manual_seed(0)
    save_pretrained(DecoderLM(TINY.replace(family="llama")), tmp_path)
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert load_shape(tmp_path).cache_bytes(6, 2) == hf_cache_bytes(hf, 2, 6)


def test_published_names_and_repo_ids_and_a_local_folder_wins(tmp_path, monkeypatch):
    by_repo = load_shape("meta-llama/Meta-Llama-3-8B")
    assert by_repo.bytes_per_token == load_shape("LLAMA-3-8B").bytes_per_token
    assert by_repo.name == "meta-llama/Meta-Llama-3-8B"
    monkeypatch.chdir(tmp_path)  # a folder named like a published model is read, as HF does
    save_checkpoint(DecoderLM(TINY), tmp_path / "gpt2")
    assert load_shape("gpt2").layers == TINY.n_layers != load_shape("openai-community/gpt2").layers


def test_encoders_are_refused_with_the_reason(tmp_path):
    with pytest.raises(LLMInternalsError, match="not a decoder-only model"):
        load_shape("bert-base")
    with pytest.raises(LLMInternalsError, match="not a decoder-only model"):
        load_shape("t5-base")
    config = ModelConfig(vocab_size=40, d_model=32, n_layers=2, n_heads=4, family="bert",
                         position="learned", norm="layernorm", norm_position="post", ffn="mlp",
                         activation="gelu")  # fmt: skip
    save_checkpoint(EncoderLM(config), tmp_path)
    with pytest.raises(
        LLMInternalsError, match="model_class .EncoderLM. is not a decoder-only model"
    ):
        load_shape(tmp_path)
