"""The "bpe" lesson's numbers, recomputed independently: HF `tokenizers` for merges, pieces and
compression; plain Python (collections.Counter, regex) for chunk and pair counts."""

import json
from collections import Counter

import pytest
import regex
from tokenizers import pre_tokenizers

from llm_internals.explain.lesson import Table
from llm_internals.explain.lessons import bpe as lesson_module

from .conftest import hf_merges, hf_train

GPT2 = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
SPACE = "␣"


def shown(text: str) -> str:
    return text.replace(" ", SPACE)


def hf_text(token: str) -> str:
    """An HF byte-level token string as readable text (Ġ -> space)."""
    from llm_internals.tokenizer.byte_level import text_to_token

    return text_to_token(token).decode("utf-8")


@pytest.fixture(scope="module")
def sections():
    lesson = lesson_module.build()
    return {s.title: s.steps for s in lesson.sections}


@pytest.fixture(scope="module")
def hf_tiny():
    return hf_train(lesson_module.TINY_CORPUS, 256 + lesson_module.N_MERGES)


def _apply(pieces: list[str], pair: tuple[str, str]) -> list[str]:
    out, i = [], 0
    while i < len(pieces):
        if i + 1 < len(pieces) and (pieces[i], pieces[i + 1]) == pair:
            out.append(pieces[i] + pieces[i + 1])
            i += 2
        else:
            out.append(pieces[i])
            i += 1
    return out


def test_sections_in_the_issue_order(sections):
    assert list(sections) == [
        "What is tokenization",
        "The problem of breaking text into tokens",
        "What BPE is",
        "How BPE works step by step",
        "How BPE tokenizes new text",
        "Why modern LLMs use it",
    ]


def test_tokenization_section(sections, hf_tiny):
    steps = sections["What is tokenization"]
    word = lesson_module.UNSEEN.strip()
    assert steps[0].values["number of characters"] == len(word)
    assert steps[1].values["word vocabulary from the corpus"] == ", ".join(
        sorted(set(lesson_module.TINY_CORPUS.split()))
    )
    assert steps[1].values[f"is {word!r} in it?"] is False
    hf_tokens = hf_tiny.encode(lesson_module.UNSEEN).tokens
    assert steps[2].values["BPE pieces"] == " | ".join(shown(hf_text(t)) for t in hf_tokens)


def test_chunking_section_matches_hf_pretokenizer(sections):
    values = sections["The problem of breaking text into tokens"][0].values
    text = lesson_module.SENTENCE
    hf = pre_tokenizers.ByteLevel(add_prefix_space=False).pre_tokenize_str(text)
    chunks = [hf_text(piece) for piece, _ in hf]
    assert values["chunks"] == " | ".join(shown(c) for c in chunks)
    assert values["number of chunks"] == len(chunks)
    assert values["UTF-8 bytes"] == len(text.encode("utf-8"))


def test_chunk_table_counts(sections):
    table = sections["What BPE is"][0].values["distinct chunks"]
    assert isinstance(table, Table)
    counts = Counter(regex.findall(GPT2, lesson_module.TINY_CORPUS))
    assert {row[0]: row[1] for row in table.rows} == {shown(c): n for c, n in counts.items()}
    for chunk, _, byte_ids in table.rows:
        assert byte_ids == " ".join(str(b) for b in chunk.replace(SPACE, " ").encode())


def test_every_merge_and_pair_count_table(sections, hf_tiny):
    steps = sections["How BPE works step by step"]
    merges = [(hf_text(a), hf_text(b)) for a, b in hf_merges(hf_tiny)]
    assert len(steps) == len(merges) == lesson_module.N_MERGES
    words = Counter(regex.findall(GPT2, lesson_module.TINY_CORPUS))
    state = {w: list(w) for w in words}
    for step, (left, right) in zip(steps, merges, strict=True):
        pair_counts: Counter = Counter()
        for w, pieces in state.items():
            for pair in zip(pieces, pieces[1:], strict=False):
                pair_counts[pair] += words[w]
        table = step.values["pair counts before the merge (top)"]
        top = table.rows[0]
        assert top == [f"{shown(left)} + {shown(right)}", pair_counts[(left, right)]]
        assert pair_counts[(left, right)] == max(pair_counts.values())
        for label, count in table.rows:
            a, b = label.split(" + ")
            assert pair_counts[(a.replace(SPACE, " "), b.replace(SPACE, " "))] == count
        state = {w: _apply(p, (left, right)) for w, p in state.items()}
        assert step.values["new token"].endswith("= " + shown(left + right))
        expected_after = " ; ".join(
            " | ".join(shown(p) for p in pieces) for pieces in state.values()
        )
        assert step.values["chunks after"] == expected_after


def test_encoding_steps_of_unseen_text(sections, hf_tiny):
    values = sections["How BPE tokenizes new text"][0].values
    merges = [(hf_text(a), hf_text(b)) for a, b in hf_merges(hf_tiny)]
    pieces = list(lesson_module.UNSEEN)
    expected_rows = []
    while True:
        candidates = [
            (merges.index(pair), pair)
            for pair in zip(pieces, pieces[1:], strict=False)
            if pair in merges
        ]
        if not candidates:
            break
        rank, pair = min(candidates)
        pieces = _apply(pieces, pair)
        expected_rows.append(
            [len(expected_rows) + 1, f"{shown(pair[0])} + {shown(pair[1])}", rank,
             " | ".join(shown(p) for p in pieces)]
        )  # fmt: skip
    assert values["merges applied"].rows == expected_rows
    hf_tokens = [hf_text(t) for t in hf_tiny.encode(lesson_module.UNSEEN).tokens]
    assert hf_tokens == pieces
    assert values["bytes"] == str(list(lesson_module.UNSEEN.encode()))


def test_byte_level_and_compression_equal_hf(sections, shakespeare_text):
    steps = sections["Why modern LLMs use it"]
    assert steps[0].values["decoded"] == steps[0].values["text"]
    table = steps[1].values["compression"]
    n_bytes = len(shakespeare_text.encode("utf-8"))
    assert steps[1].values["corpus bytes"] == n_bytes
    assert table.rows[0] == [256, 0, n_bytes, 1.0]
    # Cut after a lone newline between two non-space characters: there "\n" is a chunk of its
    # own in the whole text and at the end of a piece alike, so HF may encode the pieces apart.
    pieces = regex.split(r"(?<=\S\n)(?=\S)", shakespeare_text)
    assert "".join(pieces) == shakespeare_text
    for vocab_size, n_merges, n_tokens, ratio in table.rows[1:]:
        hf = hf_train(shakespeare_text, vocab_size)
        assert n_merges == len(json.loads(hf.to_str())["model"]["merges"])
        hf_tokens = sum(len(e.ids) for e in hf.encode_batch(pieces))
        assert n_tokens == hf_tokens
        assert ratio == pytest.approx(n_bytes / hf_tokens, rel=1e-12)
