"""The fast trainer learns exactly the naive trainer's merges and exactly HF's merges."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llm_internals.errors import LLMInternalsError
from llm_internals.tokenizer import train_bpe, train_bpe_naive, train_merges
from llm_internals.tokenizer.byte_level import token_to_text

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
@given(RICH_TEXT, st.integers(min_value=257, max_value=330), st.sampled_from(["hf", "bytes"]))
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


def test_tie_break_rules_decide_between_equal_counts():
    # Chunks "ab" and " ba": pairs (a,b), (b,a), (space,b) each occur once. In HF's order the
    # printable 'a' (stand-in position 64) comes before space (stand-in 'Ġ', position 220); in
    # byte order space (0x20) comes first.
    text = "ab ba"
    hf = train_merges(text, 257, special_tokens=(), tie_break="hf")
    by_bytes = train_merges(text, 257, special_tokens=(), tie_break="bytes")
    assert _merge_bytes(hf) == [(b"a", b"b")]
    assert _merge_bytes(by_bytes) == [(b" ", b"b")]
    hf_ref = hf_merges(hf_train(text, 257))
    assert [(token_to_text(a), token_to_text(b)) for a, b in _merge_bytes(hf)] == hf_ref


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
    with pytest.raises(LLMInternalsError, match="tie_break"):
        train_bpe("hello", 300, tie_break="random")
    with pytest.raises(LLMInternalsError, match="vocab size"):
        train_bpe_naive("hello", 100)
