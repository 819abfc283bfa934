"""Figures that describe a trained tokenizer: compression and its longest tokens."""

from __future__ import annotations

from llm_internals.tokenizer.tokenizer import Tokenizer


def bytes_per_token(tok: Tokenizer, text: str) -> float:
    """Compression ratio: UTF-8 bytes of `text` per token (1.0 for a plain byte tokenizer)."""
    n_tokens = len(tok.encode_ordinary(text))
    return len(text.encode("utf-8")) / max(n_tokens, 1)


def longest_tokens(tok: Tokenizer, n: int = 10) -> list[tuple[int, bytes]]:
    """The `n` ordinary tokens with the most bytes (ties: lower id first)."""
    return sorted(tok.vocab.items(), key=lambda kv: (-len(kv[1]), kv[0]))[:n]


def show_token(token: bytes) -> str:
    """A token's bytes as readable text: UTF-8 where possible, with whitespace made visible."""
    text = token.decode("utf-8", errors="backslashreplace")
    return text.replace(" ", "␣").replace("\n", "↵").replace("\t", "⇥")
