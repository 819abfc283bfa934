"""Shared texts and reference builders for the tokenizer tests."""

from __future__ import annotations

import inspect
import json

import pytest

MULTILINGUAL = (
    "English: The quick brown fox can't jump over 1234567 lazy dogs!!\n"
    "中文：我们今天学习分词器，它把文字切成词元。日本語のテキストも少し。\n"
    "العربية: مرحبا بالعالم، هذا نص تجريبي للتقطيع.\n"
    "Emoji: 👋🏽 hello 🧑‍💻 coder 🇫🇷 flag ✨✨✨\n"
    "Combining: e\u0301te\u0301 (e + U+0301), n\u0303, Z\u0335\u0321a\u0336lgo\n"
    "Русский текст, Ελληνικά, हिन्दी पाठ, 한국어 문장.\n"
    "Tabs\tand   spaces   \n\n\n   trailing spaces   "
)

LLAMA3_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"""
    r"""| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)


@pytest.fixture(scope="session")
def python_source() -> str:
    import json.decoder
    import textwrap

    return inspect.getsource(json.decoder) + inspect.getsource(textwrap)


@pytest.fixture(scope="session")
def shakespeare_slice(shakespeare_text) -> str:
    start = shakespeare_text.find("\n", 1_000_000) + 1
    return shakespeare_text[start : start + 300_000]


def hf_train(text: str, vocab_size: int, pattern: str | None = None, specials=()):
    """Train HF `tokenizers` BPE on `text` (a str, or a list of documents) with the ByteLevel
    pre-tokenizer (all 256 bytes in the alphabet, no prefix space); a custom pattern goes in a
    Split before ByteLevel."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    if pattern is None:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    else:
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(pattern), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=list(specials),
        show_progress=False,
    )
    tok.train_from_iterator([text] if isinstance(text, str) else text, trainer=trainer)
    return tok


def hf_merges(hf_tokenizer) -> list[tuple[str, str]]:
    merges = json.loads(hf_tokenizer.to_str())["model"]["merges"]
    return [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in merges]


EOT = "<|endoftext|>"


@pytest.fixture(scope="session")
def tok_8k(shakespeare_text):
    """Our tokenizer trained on the whole corpus to 8192 (with <|endoftext|>)."""
    from llm_internals.tokenizer import train_bpe

    return train_bpe(shakespeare_text, 8192, special_tokens=(EOT,))


@pytest.fixture(scope="session")
def hf_8k(shakespeare_text):
    """HF `tokenizers` trained the same way."""
    return hf_train(shakespeare_text, 8192, specials=(EOT,))


@pytest.fixture(scope="session")
def tok_small(shakespeare_slice):
    from llm_internals.tokenizer import train_bpe

    return train_bpe(shakespeare_slice + MULTILINGUAL, 1500, special_tokens=(EOT, "<|pad|>"))


def tiktoken_encoding(tok, pattern: str | None = None):
    """A tiktoken Encoding holding exactly our tokenizer's vocabulary and specials."""
    import tiktoken

    return tiktoken.Encoding(
        name="llm-internals-test",
        pat_str=pattern or tok.pattern,
        mergeable_ranks=tok.to_tiktoken(),
        special_tokens=dict(tok.special_tokens),
    )


def hf_from_ours(tok):
    """HF `tokenizers` loading the tokenizer.json our exporter writes."""
    from tokenizers import Tokenizer

    return Tokenizer.from_str(json.dumps(tok.to_hf()))
