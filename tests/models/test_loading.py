"""models/loading.py: `--model PATH` alone loads every folder the project or HF writes, with the
right tokenizer, and the loaded model computes what the saved one did."""

from __future__ import annotations

import pytest
import torch
import transformers

from llm_internals.cli import main
from llm_internals.errors import LLMInternalsError
from llm_internals.models import DecoderLM, ModelConfig, save_checkpoint, save_pretrained
from llm_internals.models.loading import (
    find_tokenizer_file,
    load_model_and_tokenizer,
    resolve_model_directory,
)
from llm_internals.tokenizer import train_bpe
from llm_internals.training.checkpoint import save_training_checkpoint
from llm_internals.training.config import TrainConfig

TEXT = "To be, or not to be, that is the question: whether 'tis nobler in the mind. " * 6


@pytest.fixture(scope="module")
def tokenizer():
    return train_bpe(TEXT, 280)


@pytest.fixture(scope="module")
def model(tokenizer):
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=tokenizer.vocab_size, d_model=32, n_layers=2, n_heads=4,
                         n_kv_heads=2, max_seq_len=64)  # fmt: skip
    return DecoderLM(config).eval()


def _same_logits(loaded, reference, tokenizer) -> None:
    ids = torch.tensor([tokenizer.encode("whether 'tis nobler")])
    with torch.no_grad():
        assert (loaded(ids) - reference(ids)).abs().max() < 1e-5


def test_tour_style_folder_loads_with_its_tokenizer(tmp_path, model, tokenizer):
    save_checkpoint(model, tmp_path / "model")
    tokenizer.save(tmp_path / "model" / "tokenizer.json")
    loaded, loaded_tokenizer, eos = load_model_and_tokenizer(tmp_path / "model")
    _same_logits(loaded, model, tokenizer)
    assert loaded_tokenizer.encode(TEXT) == tokenizer.encode(TEXT)
    assert eos == "auto"


def test_run_folder_and_step_folder(tmp_path, model, tokenizer):
    optimizer = torch.optim.AdamW(model.parameters())
    for step in (10, 20):
        save_training_checkpoint(tmp_path, step, model, optimizer, TrainConfig(), tokenizer, {})
    newest = resolve_model_directory(tmp_path)
    assert newest.name == "step-00000020"
    for path in (tmp_path, tmp_path / "step-00000010"):
        loaded, loaded_tokenizer, _ = load_model_and_tokenizer(path)
        _same_logits(loaded, model, tokenizer)
        assert loaded_tokenizer is not None


def test_step_folder_without_tokenizer_uses_the_run_folders(tmp_path, tokenizer, model):
    step = tmp_path / "step-00000001"
    save_checkpoint(model, step)
    (tmp_path / "latest").write_text("step-00000001\n")
    tokenizer.save(tmp_path / "tokenizer.json")
    assert find_tokenizer_file(step) == tmp_path / "tokenizer.json"
    # A plain folder's parent is not searched: its tokenizer could belong to anything.
    other = tmp_path / "elsewhere" / "model"
    save_checkpoint(model, other)
    tokenizer.save(tmp_path / "elsewhere" / "tokenizer.json")
    assert find_tokenizer_file(other) is None


def test_hf_folder_loads_with_config_eos(tmp_path, tokenizer):
    config = transformers.LlamaConfig(vocab_size=tokenizer.vocab_size, hidden_size=32,
                                      intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2,
                                      max_position_embeddings=64, eos_token_id=7)  # fmt: skip
    torch.manual_seed(0)
    hf = transformers.LlamaForCausalLM(config).eval()
    hf.save_pretrained(tmp_path)
    tokenizer.save(tmp_path / "tokenizer.json")
    loaded, _, eos = load_model_and_tokenizer(tmp_path)
    ids = torch.tensor([tokenizer.encode("the question")])
    with torch.no_grad():
        assert (loaded(ids) - hf(ids).logits).abs().max() < 1e-4
    assert eos == 7


def test_our_hf_export_loads_with_model_alone_and_in_transformers(tmp_path, model, tokenizer):
    save_pretrained(model, tmp_path, tokenizer=tokenizer)
    loaded, loaded_tokenizer, _ = load_model_and_tokenizer(tmp_path)
    _same_logits(loaded, model, tokenizer)
    assert loaded_tokenizer.encode(TEXT) == tokenizer.encode(TEXT)
    hf_model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    hf_tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_file=str(tmp_path / "tokenizer.json")
    )
    ids = hf_tokenizer("whether 'tis nobler")["input_ids"]
    assert ids == tokenizer.encode("whether 'tis nobler")
    with torch.no_grad():
        expected = model(torch.tensor([ids]))
        assert (hf_model(torch.tensor([ids])).logits - expected).abs().max() < 1e-4


def test_clear_errors(tmp_path, model):
    with pytest.raises(LLMInternalsError, match="does not exist"):
        load_model_and_tokenizer(tmp_path / "missing")
    with pytest.raises(LLMInternalsError, match="no config.json and no latest"):
        load_model_and_tokenizer(tmp_path)
    save_checkpoint(model, tmp_path / "bare")
    with pytest.raises(LLMInternalsError, match="no tokenizer") as info:
        load_model_and_tokenizer(tmp_path / "bare")
    assert "--tokenizer" in info.value.hint
    loaded, tok, _ = load_model_and_tokenizer(tmp_path / "bare", require_tokenizer=False)
    assert tok is None and isinstance(loaded, DecoderLM)
    (tmp_path / "latest").write_text("step-00000009\n")
    with pytest.raises(LLMInternalsError, match="names step-00000009, which has no config.json"):
        load_model_and_tokenizer(tmp_path)
    (tmp_path / "latest").write_text("../bare\n")  # never followed outside the run folder
    with pytest.raises(LLMInternalsError, match="not a step-NNNNNNNN folder"):
        load_model_and_tokenizer(tmp_path)


def test_generate_command_needs_only_the_folder(tmp_path, model, tokenizer, capsys):
    save_checkpoint(model, tmp_path / "model")
    tokenizer.save(tmp_path / "model" / "tokenizer.json")
    code = main(["generate", "--model", str(tmp_path / "model"), "--prompt", "To be",
                 "--max-new-tokens", "5", "--temperature", "0"])  # fmt: skip
    assert code == 0
    assert "tokens/s" in capsys.readouterr().out
