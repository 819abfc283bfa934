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
from llm_internals.models.checkpoint import (
    INDEX_FILE,
    read_weight_shapes,
    read_weights,
    write_weights,
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
    with pytest.raises(LLMInternalsError, match="model.safetensors: SHA-256 does not match"):
        load_pretrained(tmp_path)
    meta = json.loads((tmp_path / "config.json").read_text())
    del meta["checksums"]  # as a folder saved before checksums existed
    (tmp_path / "config.json").write_text(json.dumps(meta))
    with pytest.raises(LLMInternalsError, match="not a readable safetensors file"):
        load_pretrained(tmp_path)


# ----- malformed files: one error naming the file and the field ---------------------------
def _own_checkpoint(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    save_checkpoint(DecoderLM(CONFIG), tmp_path)
    return tmp_path


def _edit_json(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: m.update(model_class=[]), "config.json: unknown model_class []"),
        (lambda m: m["config"].update(rope_scaling=[1]), "rope_scaling must be an object"),
        (lambda m: m["config"].update(norm_eps="1e-5"), "norm_eps must be > 0, got '1e-5'"),
        (lambda m: m["config"].update(d_model="32"), "d_model must be a positive integer"),
        (lambda m: m["config"].update(extra=[]), "extra must be an object"),
        (lambda m: m.update(config=[1]), "config.json: config: expected a JSON object"),
        (lambda m: m.update(checksums=[]), "field 'checksums' must map file names"),
    ],
)
def test_own_config_with_wrong_types_is_one_clear_error(tmp_path, edit, message):
    path = _own_checkpoint(tmp_path)
    _edit_json(path / "config.json", edit)
    with pytest.raises(LLMInternalsError, match=re.escape(message)) as info:
        load_checkpoint(path)
    assert "config.json" in info.value.message


def test_non_utf8_and_oversized_config_files_are_named(tmp_path):
    path = _own_checkpoint(tmp_path)
    (path / "config.json").write_bytes(b'{"format": "llm-internals\xff"}')
    with pytest.raises(LLMInternalsError, match=r"config.json: not UTF-8 text \(byte 0xff"):
        load_checkpoint(path)
    with open(path / "config.json", "wb") as f:  # sparse: 65 MB without writing them
        f.truncate(65 * 1024 * 1024)
    with pytest.raises(LLMInternalsError, match="more than a model config file may hold"):
        load_pretrained(path)


def test_flipped_weight_byte_is_caught_by_the_checksum(tmp_path):
    path = _own_checkpoint(tmp_path)
    data = bytearray((path / "model.safetensors").read_bytes())
    data[-7] ^= 0x04
    (path / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(LLMInternalsError, match="model.safetensors: SHA-256 does not match"):
        load_checkpoint(path)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"d_model": 2**20, "vocab_size": 2**20, "d_ff": 2**22}, "more than this machine's"),
        ({"n_layers": 10**7}, "n_layers=10000000, but the weight files hold only"),
    ],
)
def test_a_config_asking_for_terabytes_fails_at_once(tmp_path, fields, message):
    import time

    path = _own_checkpoint(tmp_path)
    _edit_json(path / "config.json", lambda m: m["config"].update(fields, head_dim=None))
    started = time.perf_counter()
    with pytest.raises(LLMInternalsError, match=message):
        load_checkpoint(path)
    assert time.perf_counter() - started < 2.0


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("hidden_size", "64", "field 'hidden_size' must be an integer, got '64'"),
        ("rms_norm_eps", "1e-5", "field 'rms_norm_eps' must be a finite number"),
        ("rope_scaling", [1], "field 'rope_scaling' must be an object, got [1]"),
        ("tie_word_embeddings", "false", "field 'tie_word_embeddings' must be true or false"),
        ("hidden_act", ["silu"], "hidden_act ['silu'] is not supported"),
        ("num_hidden_layers", 10**7, "n_layers=10000000, but the weight files hold only"),
        ("vocab_size", 2**40, "more than this machine's"),
    ],
)
def test_hf_config_with_wrong_types_is_one_clear_error(hf_decoder, tmp_path, field, value, message):
    path = _hf_checkpoint(hf_decoder, tmp_path)
    _edit_json(path / "config.json", lambda c: c.update({field: value}))
    with pytest.raises(LLMInternalsError, match=re.escape(message)) as info:
        load_pretrained(path)
    assert str(path / "config.json") in info.value.message


@pytest.mark.parametrize(
    ("shard_name", "message"),
    [
        (["model-00001.safetensors"], "must be a file name, got ['model-00001.safetensors']"),
        ("/etc/model.safetensors", "is not a plain file name in the checkpoint's folder"),
        ("../outside/model.safetensors", "is not a plain file name in the checkpoint's folder"),
        ("..", "is not a plain file name"),
    ],
)
def test_shard_index_entries_must_be_file_names_in_the_folder(
    hf_decoder, tmp_path, shard_name, message
):
    folder = tmp_path / "ckpt"
    hf_decoder("llama").save_pretrained(folder, max_shard_size="20KB")
    index_path = folder / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    name = sorted(index["weight_map"])[0]
    if isinstance(shard_name, str) and shard_name.startswith("../"):
        # the file really exists outside the folder: it must still not be read
        (tmp_path / "outside").mkdir()
        real = folder / index["weight_map"][name]
        (tmp_path / "outside" / "model.safetensors").write_bytes(real.read_bytes())
    index["weight_map"][name] = shard_name
    index_path.write_text(json.dumps(index))
    with pytest.raises(LLMInternalsError, match=re.escape(message)):
        load_pretrained(folder)


def test_an_index_naming_a_tensor_its_shard_lacks_is_an_error(tmp_path):
    tensors = {"a": torch.zeros(64), "b": torch.ones(64)}
    write_weights(tmp_path, tensors, max_shard_bytes=300)  # one tensor per shard
    assert read_weights(tmp_path).keys() == tensors.keys()
    index = json.loads((tmp_path / INDEX_FILE).read_text())
    shard_of_a = index["weight_map"]["a"]
    index["weight_map"]["ghost"] = shard_of_a
    (tmp_path / INDEX_FILE).write_text(json.dumps(index))
    for read in (read_weights, read_weight_shapes):
        with pytest.raises(LLMInternalsError, match=f"maps ghost to {shard_of_a}, which lacks it"):
            read(tmp_path)
