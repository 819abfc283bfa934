"""Pre-tokenization: the ASCII fast path cuts exactly like the Unicode regex, and our named
patterns cut like the production libraries (HF ByteLevel, tiktoken's cl100k pattern)."""

import regex
from hypothesis import given, settings
from hypothesis import strategies as st

from llm_internals.tokenizer.pretokenize import (
    GPT2_PATTERN,
    GPT4_PATTERN,
    get_pretokenizer,
    split_text,
)

from .conftest import MULTILINGUAL

ASCII_TEXT = st.text(alphabet=st.characters(max_codepoint=127), max_size=200)


@settings(max_examples=300, deadline=None)
@given(ASCII_TEXT)
def test_ascii_twins_cut_like_the_unicode_patterns(text):
    for pattern in (GPT2_PATTERN, GPT4_PATTERN):
        pre = get_pretokenizer(pattern)
        assert pre.ascii_regex is not None
        assert pre.ascii_regex.findall(text) == regex.findall(pattern, text)


def test_ascii_twin_on_the_corpus(shakespeare_slice):
    for pattern in (GPT2_PATTERN, GPT4_PATTERN):
        pre = get_pretokenizer(pattern)
        assert pre.ascii_regex.findall(shakespeare_slice) == regex.findall(
            pattern, shakespeare_slice
        )


def test_chunks_cover_the_text_and_gpt2_matches_hf_bytelevel(python_source):
    from tokenizers import pre_tokenizers

    from llm_internals.tokenizer.byte_level import text_to_token

    hf = pre_tokenizers.ByteLevel(add_prefix_space=False)
    for text in (MULTILINGUAL, python_source):
        chunks = split_text(text, "gpt2")
        assert "".join(chunks) == text
        hf_chunks = [text_to_token(piece).decode("utf-8") for piece, _ in hf.pre_tokenize_str(text)]
        assert chunks == hf_chunks


def test_gpt4_alias_and_split_many():
    pre = get_pretokenizer("cl100k")
    assert pre.pattern == GPT4_PATTERN
    texts = ["Hello  world\n", MULTILINGUAL, "123456 abc"]
    assert pre.split_many(texts) == [pre.split(t) for t in texts]
    assert split_text("12345", "gpt4") == ["123", "45"]


def test_bad_custom_pattern_is_a_clear_error():
    import pytest

    from llm_internals.errors import LLMInternalsError

    with pytest.raises(LLMInternalsError, match="not a valid regular expression"):
        get_pretokenizer("(unclosed")


def test_a_pattern_that_would_drop_characters_is_refused():
    import pytest

    from llm_internals.errors import LLMInternalsError
    from llm_internals.tokenizer import Tokenizer

    base = {i: bytes([i]) for i in range(256)}
    with pytest.raises(LLMInternalsError, match=r"does not match ','.*would be dropped"):
        Tokenizer(base, pattern=r"\w+|\s+")  # refused at load: the probe text has commas
    with pytest.raises(LLMInternalsError, match="capturing group"):
        Tokenizer(base, pattern=r"(\w+)|\s+|(?s:.)")
    with pytest.raises(LLMInternalsError, match="at most 10,000"):
        get_pretokenizer("a|" * 6000 + "(?s:.)", must_cover=True)
    # covers the probe text but not a snowman: refused when it meets one, never dropped
    tok = Tokenizer(base, pattern=r"\p{L}+|\p{N}+|\s+|[^\p{L}\p{N}\s☃]+")
    assert tok.decode(tok.encode("a, b 1")) == "a, b 1"
    with pytest.raises(LLMInternalsError, match="does not match '☃'"):
        tok.encode("a☃b")


def test_catastrophic_backtracking_is_an_error_not_a_hang():
    import time

    import pytest

    from llm_internals.errors import LLMInternalsError

    pre = get_pretokenizer(
        r"(?:a|aa)+$|(?s:.)", must_cover=True
    )  # passes the probe (no long run of a's)
    start = time.perf_counter()
    with pytest.raises(LLMInternalsError, match="catastrophic backtracking"):
        pre.split("a" * 60 + "!")
    assert time.perf_counter() - start < 30  # unbounded, this takes years
