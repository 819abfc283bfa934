"""What a token id may be: an integer in 0..MAX_TOKEN_ID (the symbol strings of chunk_bpe.py
hold one id per character, and chr() stops at 0x10FFFF)."""

from __future__ import annotations

from collections.abc import Mapping

from llm_internals.errors import LLMInternalsError
from llm_internals.tokenizer.chunk_bpe import MAX_TOKEN_ID

__all__ = ["MAX_TOKEN_ID", "check_token_ids", "is_token_id"]


def check_token_ids(vocab: Mapping[int, bytes], special_tokens: Mapping[str, int]) -> None:
    """Ids are integers in 0..MAX_TOKEN_ID (the symbol strings of chunk_bpe.py hold one id per
    character); ordinary tokens are non-empty bytes, special tokens non-empty strings."""
    for token_id, token in vocab.items():
        if not is_token_id(token_id):
            raise LLMInternalsError(
                f"vocab id {token_id!r} (token {token!r}) is not an integer in 0..{MAX_TOKEN_ID}"
            )
        if not isinstance(token, bytes) or not token:
            raise LLMInternalsError(f"vocab id {token_id}: token {token!r} is not non-empty bytes")
    for name, token_id in special_tokens.items():
        if not isinstance(name, str) or not name:
            raise LLMInternalsError(
                f"special token {name!r} (id {token_id!r}) is empty or not a string"
            )
        if not is_token_id(token_id):
            raise LLMInternalsError(
                f"special token {name!r} has id {token_id!r}, not an integer in 0..{MAX_TOKEN_ID}"
            )


def is_token_id(value: object) -> bool:
    """An int (not a bool) in 0..MAX_TOKEN_ID."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_TOKEN_ID
