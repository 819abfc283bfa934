"""encode_iterable (lazy, bounded memory, same ids as encoding the joined text) and building a
tokenizer from a vocabulary and byte-pair merges."""

import itertools
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llm_internals.errors import LLMInternalsError
from llm_internals.tokenizer import Tokenizer, train_bpe
from llm_internals.tokenizer.streaming import encode_iterable

from .conftest import EOT, MULTILINGUAL, tiktoken_encoding

PIECES = ["the", " cat", "  ", "\n", "\n\n", " ", "'s", "!!", "1234", "中文", "\t", "<|", "endof",
          "text|>", EOT, "<|pad|>", "Ab", "'", "\r\n", "x"]  # fmt: skip


@pytest.fixture(scope="module")
def tokenizers():
    text = MULTILINGUAL * 4 + "".join(PIECES) * 20
    return [
        train_bpe(text, 600, pattern=pattern, special_tokens=(EOT, "<|pad|>"))
        for pattern in ("gpt2", "gpt4")
    ]


@settings(max_examples=150, deadline=None)
@given(
    pieces=st.lists(st.sampled_from(PIECES), max_size=40),
    cuts=st.lists(st.integers(0, 200), max_size=8),
    buffer_chars=st.integers(1, 24),
    allowed=st.sampled_from(["all", "none"]),
)
def test_streamed_ids_equal_the_joined_texts_ids(tokenizers, pieces, cuts, buffer_chars, allowed):
    text = "".join(pieces)
    positions = sorted({min(c, len(text)) for c in cuts})
    texts = [text[a:b] for a, b in zip([0, *positions], [*positions, len(text)], strict=True)]
    for tok in tokenizers:
        kwargs = {"allowed_special": "all"} if allowed == "all" else {"disallowed_special": ()}
        expected = tok.encode(text, **kwargs)
        assert list(encode_iterable(tok, texts, buffer_chars=buffer_chars, **kwargs)) == expected


def test_a_special_token_split_across_texts_stays_one_token(tokenizers):
    for tok in tokenizers:
        texts = ["a b c <|endoftext|", "> d <|pa", "d|>"]  # "<|endoftext|" is 3 chunks
        streamed = list(encode_iterable(tok, texts, allowed_special="all", buffer_chars=1))
        assert streamed == tok.encode("".join(texts), allowed_special="all")
        assert tok.special_tokens[EOT] in streamed


def test_streaming_is_lazy_and_raises_on_disallowed_specials(tok_small):
    ids = tok_small.encode_iterable(itertools.repeat("To be, or not to be.\n"))
    first = list(itertools.islice(ids, 10_000))  # an endless stream: only laziness ends this
    assert first[:8] == tok_small.encode("To be, or not to be.\n")[:8]
    with pytest.raises(LLMInternalsError, match="not allowed"):
        list(tok_small.encode_iterable(["a b c", EOT, " d"]))


def test_memory_does_not_grow_with_the_stream():
    # Each line is one chunk (pattern) and one token (trained on it): the stream's 50 MB give
    # 250k ids, so tracemalloc (which slows every allocation) stays quick, and what it measures
    # is the buffering. Holding the input or the ids would take over 50 MB.
    line = "But soft, what light through yonder window breaks? It is the east! " * 3 + "\n"
    tok = train_bpe(line * 4, 256 + 2 * len(line), pattern=r"[^\n]*\n|[^\n]+")
    assert tok.encode(line) == [max(tok.vocab)]

    def peak_and_count(n_bytes):
        lines = itertools.repeat(line, n_bytes // len(line))  # generated lazily
        tracemalloc.start()
        count = sum(1 for _ in tok.encode_iterable(lines))
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return peak, count

    small_peak, small_count = peak_and_count(1_000_000)
    big_peak, big_count = peak_and_count(50_000_000)
    assert big_count == 50_000_000 // len(line) and small_count == 1_000_000 // len(line)
    assert big_peak < 2 * small_peak + 1_000_000 and big_peak < 8_000_000


def test_from_vocab_merges_round_trips_a_trained_tokenizer(tok_small):
    vocab = dict(tok_small.vocab)
    for name, token_id in tok_small.special_tokens.items():
        vocab[token_id] = name.encode()
    merges = [(tok_small.vocab[a], tok_small.vocab[b]) for a, b in tok_small.merges]
    rebuilt = Tokenizer.from_vocab_merges(vocab, merges, special_tokens=[EOT, "<|pad|>"])
    assert rebuilt.special_tokens == tok_small.special_tokens
    assert rebuilt.merges == tok_small.merges and rebuilt.vocab == tok_small.vocab
    text = f"O Romeo{EOT} wherefore" + MULTILINGUAL
    assert rebuilt.encode(text, allowed_special="all") == tok_small.encode(text, "all")
    enc = tiktoken_encoding(tok_small)  # and with tiktoken's ids for the same vocabulary
    assert rebuilt.encode(text, allowed_special="all") == enc.encode(text, allowed_special="all")
    with pytest.raises(LLMInternalsError, match=r"merge 1 .* is not in vocab"):
        Tokenizer.from_vocab_merges(vocab, [merges[0], (b"zz", b"q")])
    extra = Tokenizer.from_vocab_merges(tok_small.vocab, merges, special_tokens=["<|new|>"])
    assert extra.special_tokens == {"<|new|>": max(tok_small.vocab) + 1}
