"""The fast trainer learns exactly the naive trainer's merges and exactly HF's merges; both
tie-break rules give the merges derived by hand; every input form trains the same tokenizer."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llm_internals.errors import LLMInternalsError
from llm_internals.tokenizer import train_bpe, train_bpe_naive, train_merges
from llm_internals.tokenizer.byte_level import token_to_text
from llm_internals.tokenizer.training_common import descending_key

from .conftest import LLAMA3_PATTERN, MULTILINGUAL, hf_merges, hf_train

# Letters, digits, punctuation, whitespace, accents, CJK and emoji (4-byte UTF-8).
RICH_TEXT = st.text(
    alphabet=st.sampled_from(list("aab ab  ba\n\t.,'!0123é中文😀👍🏽\u0301")),
    min_size=1,
    max_size=300,
)


def _merge_bytes(trained):
    return [(trained.vocab[a], trained.vocab[b]) for a, b, _ in trained.merges]


@settings(max_examples=60, deadline=None)
@given(
    RICH_TEXT,
    st.integers(min_value=257, max_value=330),
    st.sampled_from(["hf", "lexicographic"]),
)
def test_fast_trainer_equals_naive_trainer(text, vocab_size, tie_break):
    fast = train_merges(text, vocab_size, special_tokens=(), tie_break=tie_break)
    naive = train_bpe_naive(text, vocab_size, tie_break=tie_break)
    assert fast.merges == naive.merges
    assert fast.vocab == naive.vocab


@pytest.mark.parametrize("pattern", ["gpt2", "gpt4"])
def test_fast_equals_naive_on_real_text(shakespeare_slice, python_source, pattern):
    for text in (shakespeare_slice[:20_000], python_source[:20_000], MULTILINGUAL * 3):
        fast = train_merges(text, 400, pattern=pattern, special_tokens=())
        naive = train_bpe_naive(text, 400, pattern=pattern)
        assert fast.merges == naive.merges


def test_merges_equal_hf_in_order_on_several_corpora(shakespeare_slice, python_source):
    for text, vocab_size in (
        (shakespeare_slice, 2000),
        (python_source, 1000),
        (MULTILINGUAL * 5, 600),
    ):
        ours = train_merges(text, vocab_size, special_tokens=())
        reference = hf_merges(hf_train(text, vocab_size))
        assert [(token_to_text(a), token_to_text(b)) for a, b in _merge_bytes(ours)] == reference


def test_merges_equal_hf_with_a_custom_pattern(python_source):
    # Llama-3's pattern (a GPT-4-style split that HF's Oniguruma reads like `regex` does; the
    # cl100k string itself differs there: Oniguruma reads `{1,3}+` as a repeated group, not as
    # a possessive quantifier, so HF cuts "10000" whole where tiktoken cuts "100" + "00").
    ours = train_merges(python_source, 800, pattern=LLAMA3_PATTERN, special_tokens=())
    reference = hf_merges(hf_train(python_source, 800, pattern=LLAMA3_PATTERN))
    assert [(token_to_text(a), token_to_text(b)) for a, b in _merge_bytes(ours)] == reference


def test_merges_equal_hf_at_8192_on_the_whole_corpus(tok_8k, hf_8k):
    assert len(tok_8k.merges) == 8192 - 256 - 1  # one id is the reserved <|endoftext|>
    ours = [
        (token_to_text(tok_8k.vocab[a]), token_to_text(tok_8k.vocab[b])) for a, b in tok_8k.merges
    ]
    assert ours == hf_merges(hf_8k)
    assert hf_8k.get_vocab_size() == tok_8k.vocab_size


# The example corpus of Stanford CS336's BPE assignment, pre-tokenized on whitespace (the
# pattern \S+ keeps no spaces; HF gets the same pairs: its single-space pieces have none).
CS336_TEXT = (
    "low low low low low lower lower widest widest widest newest newest newest newest newest newest"  # noqa: E501
)


def _merge_strings(trained) -> list[str]:
    return [
        f"{trained.vocab[a].decode()} {trained.vocab[b].decode()}" for a, b, _ in trained.merges
    ]


def test_lexicographic_tie_break_on_the_cs336_example():
    # Words: low x5, lower x2, widest x3, newest x6. Pair counts: lo 7, ow 7, we 8, er 2, wi 3,
    # id 3, de 3, es 9, st 9, ne 6, ew 6.
    #  1. es 9 = st 9: (s,t) > (e,s)                  -> s t
    #  2. e-st 9 (widest 3 + newest 6) is the highest  -> e st
    #  3. lo 7 = ow 7: (o,w) > (l,o)                  -> o w, then l-ow 7 -> l ow
    #  5. ne 6 = ew 6 = w-est 6: "w" > "n" > "e"       -> w est, then ne 6 = e-west 6 -> n e
    #  7. ne-west 6                                    -> ne west
    #  8. wi 3 = id 3 = d-est 3: "w" > "i" > "d"       -> w i, then wi-d 3 > d-est 3 -> wi d
    # 10. wid-est 3; then low-e 2 = e-r 2: "low" > "e" -> wid est, low e, lowe r
    trained = train_merges(CS336_TEXT, 256 + 12, pattern=r"\S+", special_tokens=(),
                           tie_break="lexicographic")  # fmt: skip
    assert _merge_strings(trained) == [
        "s t", "e st", "o w", "l ow", "w est", "n e", "ne west", "w i", "wi d", "wid est",
        "low e", "lowe r",
    ]  # fmt: skip


def test_hf_tie_break_on_the_cs336_example():
    # Same counts; HF's rule takes the smallest (order(left), order(right)), bytes before any
    # merged token, merged tokens by age.
    #  1. es 9 = st 9: e < s             -> e s, then es-t 9 -> es t
    #  3. lo 7 = ow 7: l < o             -> l o, then lo-w 7 -> lo w
    #  5. ne 6 = ew 6 = w-est 6: e < n < w -> e w, then n-ew 6 = ew-est 6: byte n < token ew
    #                                    -> n ew, then new-est 6 -> new est
    #  8. wi 3 = id 3 = d-est 3: d < i < w -> d est, then i-dest 3 < w-i 3 -> i dest, w idest
    # 11. low-e 2 = e-r 2: byte e < token low -> e r, then low er
    expected = [
        "e s", "es t", "l o", "lo w", "e w", "n ew", "new est", "d est", "i dest", "w idest",
        "e r", "low er",
    ]  # fmt: skip
    trained = train_merges(CS336_TEXT, 256 + 12, pattern=r"\S+", special_tokens=())
    assert _merge_strings(trained) == expected
    reference = hf_merges(hf_train(CS336_TEXT, 256 + 12, pattern=r"\S+"))
    assert [" ".join(m) for m in reference] == expected


def test_tie_break_rules_compare_raw_bytes_or_hf_symbol_order():
    # Chunks "zz" and " é" (é = bytes c3 a9): pairs (z,z), (space,c3), (c3,a9), one each.
    # Lexicographic compares bytes: c3 > 'z' (7a) > ' ' (20). HF compares its stand-in
    # characters: 'z' (U+007A) < 'Ã' (U+00C3, for c3) < 'Ġ' (U+0120, for the space).
    text = "zz é"
    lexicographic = train_merges(text, 259, special_tokens=(), tie_break="lexicographic")
    hf = train_merges(text, 259, special_tokens=(), tie_break="hf")
    assert _merge_bytes(lexicographic) == [(b"\xc3", b"\xa9"), (b"z", b"z"), (b" ", "é".encode())]
    assert _merge_bytes(hf) == [(b"z", b"z"), (b"\xc3", b"\xa9"), (b" ", "é".encode())]
    hf_ref = hf_merges(hf_train(text, 259))
    assert [(token_to_text(a), token_to_text(b)) for a, b in _merge_bytes(hf)] == hf_ref


@given(st.binary(max_size=6), st.binary(max_size=6))
def test_descending_key_reverses_byte_order(x, y):
    assert (x < y) == (descending_key(x) > descending_key(y))
    assert (x == y) == (descending_key(x) == descending_key(y))


def _as_hf_text(trained) -> list[tuple[str, str]]:
    return [(token_to_text(a), token_to_text(b)) for a, b in _merge_bytes(trained)]


def test_a_path_a_folder_and_documents_train_like_hf(tmp_path, shakespeare_slice):
    text = shakespeare_slice[:60_000] + MULTILINGUAL * 5
    (tmp_path / "a.txt").write_text(text[:30_000])
    (tmp_path / "b.txt").write_text(text[30_000:])
    whole = hf_merges(hf_train(text, 700))
    assert _as_hf_text(train_merges(text, 700, special_tokens=())) == whole
    assert _as_hf_text(train_merges(tmp_path, 700, special_tokens=())) == whole  # a folder
    first = hf_merges(hf_train(text[:30_000], 700))
    assert _as_hf_text(train_merges(tmp_path / "a.txt", 700, special_tokens=())) == first
    lines = text.splitlines(keepends=True)  # documents: each line pre-tokenized on its own
    by_line = hf_merges(hf_train(lines, 700))
    assert by_line != whole
    assert _as_hf_text(train_merges(iter(lines), 700, special_tokens=())) == by_line


def test_special_tokens_are_reserved_never_merged_and_fill_the_vocab(shakespeare_slice):
    text = "hi<|endoftext|>hi<|endoftext|>hi there<|endoftext|>" * 20
    tok = train_bpe(text, 300, special_tokens=("<|endoftext|>", "<|pad|>"))
    assert tok.special_tokens == {
        "<|endoftext|>": tok.vocab_size - 2,
        "<|pad|>": tok.vocab_size - 1,
    }
    assert all(b"<|" not in token and b"|>" not in token for token in tok.vocab.values())
    assert tok.eot_id == tok.special_tokens["<|endoftext|>"]
    full = train_bpe(shakespeare_slice[:20_000], 300)
    assert full.vocab_size == 300 and len(full.merges) == 300 - 256 - 1


def test_bad_training_input_is_a_clear_error():
    with pytest.raises(LLMInternalsError, match="vocab size 200 is too small.*at least 257"):
        train_bpe("hello", 200)
    with pytest.raises(LLMInternalsError, match="at least 258"):
        train_bpe("hello", 257, special_tokens=("<a>", "<b>"))
    with pytest.raises(LLMInternalsError, match="corpus is empty"):
        train_bpe("", 1000)
    with pytest.raises(LLMInternalsError, match="corpus is empty"):
        train_bpe(iter([]), 1000)
    with pytest.raises(LLMInternalsError, match="tie_break 'random'") as e:
        train_bpe("hello", 300, tie_break="random")
    assert "--tie-break" in e.value.hint and "lexicographic" in e.value.hint
    with pytest.raises(LLMInternalsError, match="vocab size"):
        train_bpe_naive("hello", 100)


def test_multilingual_merges_equal_hf_and_ids_equal_tiktoken(multilingual_text):
    # 40 slices of 6,000 characters, one from each stretch of the corpus: every script in it.
    import tiktoken

    step = len(multilingual_text) // 40
    text = "".join(multilingual_text[i : i + 6000] for i in range(0, 40 * step, step))
    tok = train_bpe(text, 1500, special_tokens=("<|endoftext|>",))
    reference = hf_merges(hf_train(text, 1500, specials=("<|endoftext|>",)))
    ours = [(token_to_text(tok.vocab[a]), token_to_text(tok.vocab[b])) for a, b in tok.merges]
    assert ours == reference
    enc = tiktoken.Encoding(
        "multilingual", pat_str=tok.pattern, mergeable_ranks=tok.to_tiktoken(), special_tokens={}
    )
    assert tok.encode_ordinary(text) == enc.encode_ordinary(text)
