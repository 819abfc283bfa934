"""What both BPE trainers share: request checks, the training result and the tie-breaking rule.

Among pairs of equal count, which is merged first (deterministic, documented):

- tie_break="hf" (default): the smallest pair (order(left), order(right)) wins, where order()
  numbers the 256 byte symbols in code-point order of the ByteLevel alphabet (see
  byte_level.HF_BYTE_ORDER) and merged tokens by creation order after them. This is exactly HF
  `tokenizers`' BpeTrainer rule, so our merge list equals HF's, in order.
- tie_break="lexicographic": the greatest pair of token byte strings wins, compared as Python
  compares (bytes_left, bytes_right) tuples: `max(ties, key=lambda p: (vocab[p[0]],
  vocab[p[1]]))`. This is the rule of Stanford CS336's BPE assignment (b"st" before b"es";
  a longer string beats its own prefix).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from llm_internals.errors import LLMInternalsError
from llm_internals.tokenizer.byte_level import HF_BYTE_ORDER

TIE_BREAKS = ("hf", "lexicographic")


@dataclass
class TrainedBPE:
    """The result of training: token bytes by id, merges in rank order, reserved specials."""

    vocab: list[bytes]
    merges: list[tuple[int, int, int]]  # (left id, right id, merged id), in the order learned
    special_tokens: dict[str, int] = field(default_factory=dict)
    pattern: str = "gpt2"


def byte_symbol_order() -> list[int]:
    """order() of the 256 byte symbols under tie_break="hf" (merged ids order as themselves);
    "lexicographic" compares token bytes instead (see descending_key)."""
    return list(HF_BYTE_ORDER)


def descending_key(token: bytes) -> str:
    """A string that sorts in the opposite order of `token`: for any two byte strings,
    x < y exactly when descending_key(x) > descending_key(y). Each byte b becomes chr(255 - b)
    and a final chr(256) makes a prefix sort after its extensions. A min-heap keyed by it pops
    the lexicographically greatest token first."""
    return token.translate(_INVERTED).decode("latin-1") + "\u0100"


_INVERTED = bytes(range(255, -1, -1))


def check_training_request(
    vocab_size: int, special_tokens: Iterable[str], tie_break: str
) -> list[str]:
    """Validate the training request before reading any text; returns the special tokens as a
    de-duplicated list."""
    if tie_break not in TIE_BREAKS:
        raise LLMInternalsError(
            f"unknown tie_break {tie_break!r}",
            hint=f"use one of {', '.join(TIE_BREAKS)} (--tie-break)",
        )
    specials = list(dict.fromkeys(special_tokens))
    for token in specials:
        if not isinstance(token, str) or not token:
            raise LLMInternalsError(f"special token {token!r} must be a non-empty string")
    minimum = 256 + len(specials)
    if vocab_size < minimum:
        raise LLMInternalsError(
            f"vocab size {vocab_size} is too small: 256 byte tokens plus {len(specials)} special "
            f"token(s) need at least {minimum}",
            hint=f"pass --vocab-size {minimum} or more",
        )
    return specials


def check_chunks(chunk_counts: dict[str, int]) -> None:
    """An input without a single pre-tokenized chunk has nothing to learn from."""
    if not chunk_counts:
        raise LLMInternalsError(
            "the training corpus is empty", hint="give a corpus with some text in it (--corpus)"
        )


def assign_special_ids(vocab_len: int, specials: list[str]) -> dict[str, int]:
    """Special tokens take the ids right after the last ordinary token, in the order given."""
    return {token: vocab_len + i for i, token in enumerate(specials)}
