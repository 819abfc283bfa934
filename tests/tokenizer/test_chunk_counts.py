"""Chunk counting streams its input in pieces and still counts exactly what pre-tokenizing each
whole document with the `regex` pattern counts."""

from collections import Counter
from itertools import chain

import pytest
import regex
from hypothesis import example, given, settings
from hypothesis import strategies as st

from llm_internals.errors import LLMInternalsError
from llm_internals.tokenizer.chunk_counts import ChunkCounter, count_chunks
from llm_internals.tokenizer.pretokenize import resolve_pattern

from .conftest import LLAMA3_PATTERN, MULTILINGUAL

SPECIALS = ("<|eot|>", "<|e|>", "<x>")
# Every kind of whitespace the patterns treat differently, letters, digits, symbols, specials.
TEXTS = st.lists(
    st.sampled_from(
        ["\n", "\n\n", "\r\n", " ", "  ", "\t", "\x1c", "\x85", "\u2028", "\u3000", "\xa0"]
        + ["a", "bc", "Zé", "中文", "7", "123", ".", "!?", "'s", "'ll", "<", "|", ">"]
        + list(SPECIALS)
    ),
    max_size=80,
).map("".join)


def whole_text_counts(text: str, pattern: str, specials=()) -> Counter:
    """The definition: cut the special tokens out, then run the pattern over each segment."""
    segments = [text]
    if specials:
        by_length = sorted(specials, key=len, reverse=True)
        segments = regex.split("|".join(map(regex.escape, by_length)), text)
    compiled = regex.compile(resolve_pattern(pattern))
    return Counter(chain.from_iterable(compiled.findall(s) for s in segments))


def streamed(text: str, pattern: str, specials, cuts: list[int]) -> Counter:
    counter = ChunkCounter(pattern, specials)
    bounds = [0, *sorted(c % (len(text) + 1) for c in cuts), len(text)]
    counter.add_stream(text[a:b] for a, b in zip(bounds, bounds[1:], strict=False))
    return counter.counts


@settings(max_examples=300, deadline=None)
@given(
    TEXTS,
    st.sampled_from(["gpt2", "gpt4"]),
    st.sampled_from([(), SPECIALS]),
    st.lists(st.integers(0, 400), max_size=6),
)
# gpt2 keeps a run "  \n" whole before a special token (the segment ends there), so no cut
# may fall before that "\n"; with the block ending inside the special, the cut may only be
# judged once the whole special has arrived.
@example("a  \n<|e|>b", "gpt2", SPECIALS, [])
@example("a  \n<|e|>b", "gpt2", SPECIALS, [6])
@example("a  \n<|eot|>b\n", "gpt2", SPECIALS, [4, 6, 8])
def test_streamed_pieces_count_exactly_the_whole_text(text, pattern, specials, cuts):
    expected = whole_text_counts(text, pattern, specials)
    assert streamed(text, pattern, specials, cuts) == expected
    assert count_chunks(text, pattern, specials) == expected


def test_named_patterns_do_cut_real_text_into_many_pieces(shakespeare_slice):
    # Guards the speed path: without cuts the counts would still be right, only slower.
    for pattern in ("gpt2", "gpt4"):
        counter = ChunkCounter(pattern, ("<|endoftext|>",))
        assert len(counter.cut.split(shakespeare_slice)) > 1000
    assert ChunkCounter(LLAMA3_PATTERN).cut is None  # custom: whole documents only
    assert ChunkCounter("gpt2", ("a\nb",)).cut is None


@pytest.mark.parametrize("pattern", ["gpt2", "gpt4", LLAMA3_PATTERN])
def test_real_text_in_small_blocks(shakespeare_slice, pattern):
    text = shakespeare_slice[:50_000] + MULTILINGUAL * 20
    expected = whole_text_counts(text, pattern, ("<|endoftext|>",))
    cuts = list(range(0, len(text), 997))
    assert streamed(text, pattern, ("<|endoftext|>",), cuts) == expected


def test_sources_a_string_a_path_a_folder_and_documents(tmp_path):
    text = MULTILINGUAL * 3
    (tmp_path / "a.txt").write_text(text[:500])
    (tmp_path / "b.txt").write_text(text[500:])
    whole = whole_text_counts(text, "gpt2")
    assert count_chunks(text) == whole
    assert count_chunks(tmp_path) == whole  # the folder's files, concatenated in name order
    assert count_chunks(tmp_path / "a.txt") == whole_text_counts(text[:500], "gpt2")
    lines = text.splitlines(keepends=True)
    per_line = sum((whole_text_counts(line, "gpt2") for line in lines), Counter())
    assert count_chunks(iter(lines)) == per_line != whole  # each document on its own


def test_bad_sources_are_clear_errors(tmp_path):
    with pytest.raises(LLMInternalsError, match="document 1 is a bytes"):
        count_chunks(["fine", b"bytes"])
    with pytest.raises(LLMInternalsError, match="cannot train on a int"):
        count_chunks(42)
    with pytest.raises(LLMInternalsError, match="no such file"):
        count_chunks(tmp_path / "missing.txt")


def test_a_file_is_counted_in_blocks_never_held_whole(tmp_path, monkeypatch):
    import tracemalloc

    from llm_internals.tokenizer import chunk_counts

    monkeypatch.setattr(chunk_counts, "BLOCK_CHARS", 1 << 16)  # 64 KB blocks, a 2.1 MB file
    lines = [f"line {i % 97} of a long corpus, with some words to count.\n" for i in range(40_000)]
    path = tmp_path / "big.txt"
    path.write_text("".join(lines))
    size = path.stat().st_size
    tracemalloc.start()
    counts = count_chunks(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert counts == whole_text_counts("".join(lines), "gpt2")
    # A few forms of one block at a time (bytes, str, pieces); the whole text would be `size`
    # and its list of 600k chunks ten times more.
    assert peak < size / 3, (peak, size)
