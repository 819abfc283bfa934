"""Our own checkpoint format, and clear errors for broken checkpoint directories."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import llm_internals
from llm_internals.errors import LLMInternalsError
from llm_internals.models import (
    DecoderLM,
    ModelConfig,
    load_checkpoint,
    load_pretrained,
    save_checkpoint,
)

CONFIG = ModelConfig(vocab_size=64, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2,
                     tie_embeddings=True, qk_norm=True)  # fmt: skip


def test_own_format_round_trip_keeps_logits_and_tying(tmp_path):
    torch.manual_seed(0)
    model = DecoderLM(CONFIG).eval()
    save_checkpoint(model, tmp_path)
    meta = json.loads((tmp_path / "config.json").read_text())
    assert meta["format"] == "llm-internals" and meta["model_class"] == "DecoderLM"
    stored = load_file(tmp_path / "model.safetensors")
    assert "lm_head.weight" not in stored  # the tied head is stored once, as the embedding
    for loader in (load_checkpoint, load_pretrained):
        loaded = loader(tmp_path)
        assert loaded.config == CONFIG
        assert loaded.lm_head.weight is loaded.tok_emb.weight
        ids = torch.randint(0, 64, (2, 9))
        with torch.no_grad():
            assert torch.equal(loaded(ids), model(ids))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]


def _hf_checkpoint(hf_decoder, tmp_path: Path) -> Path:
    hf_decoder("llama").save_pretrained(tmp_path)
    return tmp_path


def _edit_tensors(path: Path, edit) -> None:
    tensors = load_file(path / "model.safetensors")
    edit(tensors)
    save_file(tensors, path / "model.safetensors", {"format": "pt"})


def test_missing_tensor_is_named(hf_decoder, tmp_path):
    path = _hf_checkpoint(hf_decoder, tmp_path)
    _edit_tensors(path, lambda t: t.pop("model.layers.1.mlp.up_proj.weight"))
    with pytest.raises(
        LLMInternalsError, match=r"missing tensor\(s\): model.layers.1.mlp.up_proj.weight"
    ):
        load_pretrained(path)


def test_unexpected_tensor_is_named(hf_decoder, tmp_path):
    path = _hf_checkpoint(hf_decoder, tmp_path)
    _edit_tensors(path, lambda t: t.update({"model.layers.0.extra.weight": torch.zeros(2)}))
    with pytest.raises(
        LLMInternalsError, match=r"unexpected tensor\(s\): model.layers.0.extra.weight"
    ):
        load_pretrained(path)


def test_misshaped_tensor_is_named(hf_decoder, tmp_path):
    path = _hf_checkpoint(hf_decoder, tmp_path)
    _edit_tensors(path, lambda t: t.update({"model.norm.weight": torch.ones(63)}))
    with pytest.raises(
        LLMInternalsError, match=re.escape("model.norm.weight has shape (63,), expected (64,)")
    ):
        load_pretrained(path)


def test_config_problems_are_named(hf_decoder, tmp_path):
    path = _hf_checkpoint(hf_decoder, tmp_path)
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps(config | {"model_type": "mamba"}))
    with pytest.raises(LLMInternalsError, match="model_type 'mamba' is not supported"):
        load_pretrained(path)
    (path / "config.json").write_text(json.dumps(config | {"hidden_act": "softplus"}))
    with pytest.raises(LLMInternalsError, match="hidden_act 'softplus' is not supported"):
        load_pretrained(path)
    (path / "config.json").write_text(json.dumps(config | {"num_key_value_heads": 3}))
    with pytest.raises(LLMInternalsError, match="not a multiple of n_kv_heads=3"):
        load_pretrained(path)
    (path / "config.json").unlink()
    with pytest.raises(LLMInternalsError, match="config.json does not exist"):
        load_pretrained(path)
    with pytest.raises(LLMInternalsError, match="does not exist"):
        load_pretrained(tmp_path / "nowhere")


def test_pickles_are_refused_and_never_loaded(hf_decoder, tmp_path):
    path = _hf_checkpoint(hf_decoder, tmp_path)
    (path / "model.safetensors").unlink()
    (path / "pytorch_model.bin").write_bytes(b"not even read")
    with pytest.raises(LLMInternalsError, match="pickle weights"):
        load_pretrained(path)
    package = Path(llm_internals.__file__).parent
    sources = [*package.joinpath("models").rglob("*.py"), *package.joinpath("layers").rglob("*.py")]
    offenders = [p for p in sources if re.search(r"torch\.load\(|import pickle", p.read_text())]
    assert offenders == []


def test_broken_shard_index_is_named(hf_decoder, tmp_path):
    hf_decoder("llama").save_pretrained(tmp_path, max_shard_size="20KB")
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    first_shard = sorted(set(index["weight_map"].values()))[0]
    (tmp_path / first_shard).unlink()
    with pytest.raises(LLMInternalsError, match=f"names shard {first_shard}, which does not exist"):
        load_pretrained(tmp_path)


def test_corrupt_safetensors_is_named(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (tmp_path / "model.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(LLMInternalsError, match="missing field 'num_attention_heads'"):
        load_pretrained(tmp_path)
    save_checkpoint(DecoderLM(CONFIG), tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"\x07" * 20)
    with pytest.raises(LLMInternalsError, match="not a readable safetensors file"):
        load_pretrained(tmp_path)
