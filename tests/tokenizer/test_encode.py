"""Encoding and decoding agree with tiktoken and HF `tokenizers` given the same vocabulary."""

import pytest
import tiktoken
from hypothesis import given, settings
from hypothesis import strategies as st

from llm_internals.errors import LLMInternalsError
from llm_internals.tokenizer import GPT4_PATTERN, Tokenizer, train_bpe

from .conftest import EOT, LLAMA3_PATTERN, MULTILINGUAL, hf_from_ours, tiktoken_encoding


def test_corpus_encoding_equals_tiktoken_and_hf(tok_8k, shakespeare_text):
    tok_8k._cache.clear()
    ours = tok_8k.encode_ordinary(shakespeare_text)
    assert ours == tiktoken_encoding(tok_8k).encode_ordinary(shakespeare_text)
    assert ours == tok_8k.encode_ordinary(shakespeare_text)  # warm cache: same answer
    lines = shakespeare_text[:400_000].splitlines(keepends=True)
    hf = hf_from_ours(tok_8k)
    assert tok_8k.encode_batch(lines) == [e.ids for e in hf.encode_batch(lines)]


def test_python_source_and_multilingual_equal_tiktoken_and_hf(tok_8k, tok_small, python_source):
    for tok in (tok_8k, tok_small):
        enc = tiktoken_encoding(tok)
        hf = hf_from_ours(tok)
        for text in (python_source, MULTILINGUAL):
            ours = tok.encode(text)
            assert ours == enc.encode(text)
            assert ours == hf.encode(text).ids
            assert tok.decode(ours) == text


def published_pattern(monkeypatch, constructor: str) -> str:
    """The pattern string tiktoken publishes for an encoding, read from the installed
    tiktoken_ext.openai_public without downloading its ranks."""
    import tiktoken_ext.openai_public as openai_public

    monkeypatch.setattr(openai_public, "load_tiktoken_bpe", lambda *a, **k: {})
    monkeypatch.setattr(openai_public, "data_gym_to_mergeable_bpe_ranks", lambda *a, **k: {})
    return getattr(openai_public, constructor)()["pat_str"]


def test_gpt4_pattern_is_tiktokens_published_cl100k_pattern(python_source, monkeypatch):
    cl100k = published_pattern(monkeypatch, "cl100k_base")
    assert cl100k == GPT4_PATTERN
    tok = train_bpe(python_source + MULTILINGUAL * 3, 1200, pattern="gpt4")
    enc = tiktoken_encoding(tok, pattern=cl100k)  # tiktoken cutting with its own string
    for text in (python_source, MULTILINGUAL, "1234567 x  \n\n  y's WE'LL \r\n\t end  "):
        assert tok.encode(text) == enc.encode(text)


def test_gpt2_pattern_cuts_like_tiktokens_published_gpt2_pattern(python_source, monkeypatch):
    # tiktoken publishes a faster string for GPT-2's pattern ("equivalent", its comment says);
    # ours is the original (also HF's ByteLevel). They must cut every text the same way.
    r50k = published_pattern(monkeypatch, "gpt2")
    tok = train_bpe(python_source + MULTILINGUAL * 3, 1200, pattern="gpt2")
    enc = tiktoken_encoding(tok, pattern=r50k)
    for text in (python_source, MULTILINGUAL, "1234567 x  \n\n  y's WE'LL \r\n\t end  "):
        assert tok.encode(text) == enc.encode(text)


def test_a_chunk_that_is_a_token_is_one_token_even_if_merges_miss_it():
    # Ranks bc < ab < cd < abcd: merging bytes gives a|bc|d, which never reaches abcd.
    # tiktoken (and HF with ignore_merges) look the whole chunk up first: one token.
    ranks = {bytes([b]): b for b in range(256)}
    ranks |= {b"bc": 256, b"ab": 257, b"cd": 258, b"abcd": 259}
    ours = Tokenizer.from_tiktoken(ranks, pattern="gpt2")
    enc = tiktoken.Encoding("lookup", pat_str=ours.pattern, mergeable_ranks=ranks,
                            special_tokens={})  # fmt: skip
    for text in ("abcd", "abcd abcd xabcd", "abcdabcd"):
        assert ours.encode(text) == enc.encode(text)
    assert ours.encode("abcd") == [259]
    assert ours.encode("xabcd") == enc.encode("xabcd") == [ord("x"), 97, 256, 100]
    from llm_internals.trace import recording

    with recording():  # the readable path the lessons run
        assert ours.encode("abcd") == [259]


def test_hf_trained_tokenizer_json_encodes_like_hf(hf_8k, shakespeare_text, python_source):
    import json

    ours = Tokenizer.from_hf(json.loads(hf_8k.to_str()))
    assert ours.special_tokens == {EOT: 0}
    lines = shakespeare_text[-300_000:].splitlines(keepends=True)
    assert ours.encode_batch(lines) == [e.ids for e in hf_8k.encode_batch(lines)]
    for text in (python_source, MULTILINGUAL, f"end{EOT}start"):
        assert ours.encode(text, allowed_special="all") == hf_8k.encode(text).ids


def test_hf_llama3_style_file_with_custom_pattern(python_source, tmp_path):
    from .conftest import hf_train

    hf = hf_train(python_source + MULTILINGUAL, 700, pattern=LLAMA3_PATTERN)
    hf.save(str(tmp_path / "tokenizer.json"))
    ours = Tokenizer.load(tmp_path)  # a folder holding tokenizer.json
    assert ours.pattern == LLAMA3_PATTERN
    for text in (python_source, MULTILINGUAL):
        assert ours.encode(text) == hf.encode(text).ids


def test_tiktoken_rank_file_encodes_like_tiktoken(tok_small, python_source, tmp_path):
    from tiktoken.load import load_tiktoken_bpe

    path = tmp_path / "small.tiktoken"
    tok_small.to_tiktoken(path)
    ranks = load_tiktoken_bpe(str(path))
    enc = tiktoken.Encoding(
        "t", pat_str=tok_small.pattern, mergeable_ranks=ranks, special_tokens={}
    )
    ours = Tokenizer.load(path, pattern="gpt2")
    assert ours.merge_ranks == "token_id" and ours.ignore_merges
    for text in (python_source, MULTILINGUAL, "x" * 50 + " aaaaaaa"):
        assert ours.encode(text) == enc.encode(text)


def test_allowed_special_semantics_match_tiktoken(tok_small):
    enc = tiktoken_encoding(tok_small)
    text = f"To be{EOT} or not<|pad|> to be"
    with pytest.raises(ValueError):
        enc.encode(text)
    with pytest.raises(LLMInternalsError, match="special token"):
        tok_small.encode(text)
    assert tok_small.encode(text, allowed_special="all") == enc.encode(text, allowed_special="all")
    assert tok_small.encode(text, allowed_special={EOT}, disallowed_special=()) == enc.encode(
        text, allowed_special={EOT}, disallowed_special=()
    )
    assert tok_small.encode(text, disallowed_special=()) == enc.encode_ordinary(text)
    assert tok_small.encode(text, allowed_special="all").count(tok_small.eot_id) == 1
    with pytest.raises(LLMInternalsError, match="unknown special token"):
        tok_small.encode("hi", allowed_special={"<|nope|>"})
    batch = [text, "plain", f"{EOT}"]
    assert tok_small.encode_batch(batch, allowed_special="all") == [
        enc.encode(t, allowed_special="all") for t in batch
    ]


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=120))
def test_decode_encode_roundtrip_on_arbitrary_unicode(tok_small, text):
    ids = tok_small.encode_ordinary(text)
    assert tok_small.decode(ids, errors="strict") == text
    assert tok_small.decode_bytes(ids) == text.encode("utf-8")


def test_decoding_broken_utf8(tok_small):
    enc = tiktoken_encoding(tok_small)
    ids = tok_small.encode("中")  # 3 bytes: e4 b8 ad
    partial = ids[:1] if len(ids) > 1 else [0xE4]
    assert tok_small.decode(partial) == enc.decode(partial)
    assert "\ufffd" in tok_small.decode([0xE4])
    with pytest.raises(UnicodeDecodeError):
        tok_small.decode([0xE4], errors="strict")
    with pytest.raises(LLMInternalsError, match="token id 99999 is not in"):
        tok_small.decode([1, 99999])


def test_bounded_cache_gives_the_same_ids(tok_small, shakespeare_slice):
    small_cache = Tokenizer(
        tok_small.vocab, tok_small.merges, tok_small.special_tokens, cache_size=50
    )
    text = shakespeare_slice[:50_000]
    assert small_cache.encode_ordinary(text) == tok_small.encode_ordinary(text)
    assert len(small_cache._cache) <= 50
    lines = text.splitlines(keepends=True)
    assert small_cache.encode_batch(lines) == [tok_small.encode(line) for line in lines]


def test_empty_inputs(tok_small):
    assert tok_small.encode("") == [] and tok_small.encode_batch([]) == []
    assert tok_small.encode_batch(["", "a", ""]) == [[], tok_small.encode("a"), []]
    assert tok_small.decode([]) == ""


def test_decode_accepts_tensors(tok_small):
    import torch

    ids = tok_small.encode("Romeo and Juliet")
    assert tok_small.decode(torch.tensor(ids)) == "Romeo and Juliet"


def test_symbol_strings_carry_any_id_including_the_surrogate_range():
    from llm_internals.tokenizer.chunk_bpe import symbols_to_ids

    ids = [0, 65, 255, 256, 0xD7FF, 0xD800, 0xDBFF, 0xDC00, 0xDFFF, 0xE000, 100_000, 0x10FFFF]
    assert symbols_to_ids("".join(map(chr, ids))) == ids
    assert symbols_to_ids("") == []


def test_large_ids_encode_like_tiktoken():
    # A vocabulary whose merged tokens sit at ids in and beyond the UTF-16 surrogate range.
    base = {bytes([b]): b for b in range(256)}
    extra = [b"ab", b"abc", b"  ", b"xyz", b"xy", b"\xe4\xb8"]
    ranks = dict(base)
    for n, token in enumerate(extra):
        ranks[token] = 0xD800 + 7 * n if n % 2 else 60_000 + n
    ours = Tokenizer.from_tiktoken(ranks, pattern="gpt2")
    enc = tiktoken.Encoding("big", pat_str=ours.pattern, mergeable_ranks=ranks, special_tokens={})
    for text in ("abc abcd  xyz xy 中文 ab", "x" * 30):
        assert ours.encode(text) == enc.encode(text)
        assert ours.decode(ours.encode(text)) == text


def test_hf_file_with_the_cl100k_string_encodes_like_hf(python_source, tmp_path):
    # In HF (Oniguruma) `\p{N}{1,3}+` means "runs of 1-3 digits, repeated": digits stay whole.
    from .conftest import hf_train

    hf = hf_train(python_source + " 1234567 99999", 700, pattern=GPT4_PATTERN)
    hf.save(str(tmp_path / "tokenizer.json"))
    ours = Tokenizer.load(tmp_path / "tokenizer.json")
    for text in (python_source, "1234567 + 89", MULTILINGUAL):
        assert ours.encode(text) == hf.encode(text).ids
