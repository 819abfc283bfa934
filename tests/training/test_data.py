"""Token files, batches and the character tokenizer, checked against plain numpy/Python."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from llm_internals.errors import LLMInternalsError
from llm_internals.tokenizer.char import CharTokenizer
from llm_internals.training import data
from llm_internals.training.data import BatchSampler, build_token_file, load_token_file

TEXT = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n" * 20


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny models gain nothing from a second thread, and on a CPU shared with other work
    spinning threads make each step many times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_char_tokenizer_matches_a_sorted_character_table(tmp_path):
    tok = CharTokenizer.train(TEXT)
    chars = sorted(set(TEXT))
    stoi = {c: i for i, c in enumerate(chars)}
    assert tok.vocab_size == len(chars)
    assert tok.encode(TEXT) == [stoi[c] for c in TEXT]
    assert tok.decode(tok.encode(TEXT)) == TEXT
    tok.save(tmp_path / "chars.json")
    again = CharTokenizer.load(tmp_path / "chars.json")
    assert again.chars == chars and again.fingerprint() == tok.fingerprint()


def test_char_tokenizer_errors_name_the_problem(tmp_path):
    tok = CharTokenizer.train("abc")
    with pytest.raises(LLMInternalsError, match="'z' is not in"):
        tok.encode("abz")
    with pytest.raises(LLMInternalsError, match="appears twice"):
        CharTokenizer(["a", "a"])
    (tmp_path / "bad.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(LLMInternalsError, match="bad.json.*format"):
        CharTokenizer.load(tmp_path / "bad.json")


def test_token_file_holds_the_encoded_ids_and_a_sidecar(tmp_path):
    tok = CharTokenizer.train(TEXT)
    tokens = build_token_file(TEXT, tok, tmp_path / "train.bin")
    assert isinstance(tokens, np.memmap) and tokens.dtype == np.uint16
    assert tokens.tolist() == tok.encode(TEXT)
    raw = np.fromfile(tmp_path / "train.bin", dtype="<u2")
    assert raw.tolist() == tok.encode(TEXT)
    meta = json.loads((tmp_path / "train.json").read_text())
    assert meta["count"] == len(TEXT) and meta["dtype"] == "uint16"
    assert meta["tokenizer"] == tok.fingerprint()


def test_token_file_is_reused_when_fresh_and_rebuilt_when_stale(tmp_path, monkeypatch):
    calls = []
    real_encode = data.encode_text
    monkeypatch.setattr(data, "encode_text", lambda t, s: calls.append(1) or real_encode(t, s))
    tok = CharTokenizer.train(TEXT)
    build_token_file(TEXT, tok, tmp_path / "t.bin")
    build_token_file(TEXT, tok, tmp_path / "t.bin")
    assert len(calls) == 1  # second call read the file
    other = CharTokenizer.train(TEXT + "#")  # another vocabulary: ids shift, file is stale
    rebuilt = build_token_file(TEXT, other, tmp_path / "t.bin")
    assert len(calls) == 2 and rebuilt.tolist() == other.encode(TEXT)
    build_token_file(TEXT[:-1], other, tmp_path / "t.bin")  # another text: stale too
    assert len(calls) == 3


def test_large_vocabularies_use_uint32():
    assert data.token_dtype(65536) == np.uint16
    assert data.token_dtype(65537) == np.uint32


def test_truncated_token_file_is_reported(tmp_path):
    tok = CharTokenizer.train(TEXT)
    build_token_file(TEXT, tok, tmp_path / "t.bin")
    with open(tmp_path / "t.bin", "r+b") as f:
        f.truncate(10)
    with pytest.raises(LLMInternalsError, match="t.bin has 10 bytes but"):
        load_token_file(tmp_path / "t.bin")


def test_batches_are_contiguous_shifted_blocks_from_a_seeded_generator():
    tokens = np.arange(1000, dtype=np.uint16)
    sampler = BatchSampler(tokens, batch_size=4, block_size=8, seed=7)
    x, y = sampler.next_batch()
    reference = torch.Generator().manual_seed(7)
    starts = torch.randint(1000 - 8, (4,), generator=reference)
    for row, start in enumerate(starts.tolist()):
        assert x[row].tolist() == list(range(start, start + 8))
        assert y[row].tolist() == list(range(start + 1, start + 9))
    assert x.dtype == torch.int64


def test_sampler_state_restores_the_batch_stream():
    tokens = np.arange(500, dtype=np.uint16)
    first = BatchSampler(tokens, 3, 5, seed=1)
    first.next_batch()
    state = first.state_dict()
    expected = [first.next_batch()[0] for _ in range(3)]
    second = BatchSampler(tokens, 3, 5, seed=999)
    second.load_state_dict(state)
    assert all(torch.equal(a, second.next_batch()[0]) for a in expected)
    assert second.batches_drawn == first.batches_drawn == 4


def test_too_short_token_array_is_an_error():
    with pytest.raises(LLMInternalsError, match="fewer than block_size"):
        BatchSampler(np.arange(5, dtype=np.uint16), 2, 8, seed=0)


def test_batch_sampler_puts_batches_on_its_device_and_draws_the_same_offsets():
    """The generator stays on the CPU: a sampler for another device ("meta" here, which needs
    no GPU) draws from the same stream, and only the returned tensors move."""
    tokens = np.arange(500, dtype=np.uint16)
    on_cpu = BatchSampler(tokens, batch_size=3, block_size=8, seed=7)
    elsewhere = BatchSampler(tokens, batch_size=3, block_size=8, seed=7, device="meta")
    for _ in range(3):
        x_cpu, y_cpu = on_cpu.next_batch()
        x, y = elsewhere.next_batch()
        assert x.device.type == y.device.type == "meta"
        assert x.shape == x_cpu.shape == (3, 8) and x.dtype == torch.int64
    assert torch.equal(on_cpu.generator.get_state(), elsewhere.generator.get_state())
    assert elsewhere.batches_drawn == 3
