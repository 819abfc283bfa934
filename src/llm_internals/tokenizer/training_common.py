"""What both BPE trainers share: input checks, chunk counting and the tie-breaking rule.

Tie-breaking (documented, deterministic): the pair with the highest count wins; among pairs of
equal count, the smallest pair (order(left), order(right)) wins, where order() numbers symbols:

- tie_break="hf" (default): the 256 byte symbols in code-point order of the ByteLevel alphabet
  (see byte_level.HF_BYTE_ORDER), merged tokens by creation order after them. This is exactly
  HF `tokenizers`' BpeTrainer rule, so our merge list equals HF's, in order.
- tie_break="bytes": byte symbols by byte value (token ids as minbpe/tiktoken number them).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import regex

from llm_internals.errors import LLMInternalsError
from llm_internals.tokenizer.byte_level import HF_BYTE_ORDER
from llm_internals.tokenizer.pretokenize import get_pretokenizer

TIE_BREAKS = ("hf", "bytes")


@dataclass
class TrainedBPE:
    """The result of training: token bytes by id, merges in rank order, reserved specials."""

    vocab: list[bytes]
    merges: list[tuple[int, int, int]]  # (left id, right id, merged id), in the order learned
    special_tokens: dict[str, int] = field(default_factory=dict)
    pattern: str = "gpt2"


def byte_symbol_order(tie_break: str) -> list[int]:
    """order() of the 256 byte symbols for a tie-break rule (merged ids order as themselves)."""
    if tie_break == "hf":
        return list(HF_BYTE_ORDER)
    if tie_break == "bytes":
        return list(range(256))
    raise LLMInternalsError(
        f"unknown tie_break {tie_break!r}", hint=f"use one of {', '.join(TIE_BREAKS)}"
    )


def check_training_input(text: str, vocab_size: int, special_tokens: Iterable[str]) -> list[str]:
    """Validate the training request; returns the special tokens as a de-duplicated list."""
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
    if not text:
        raise LLMInternalsError(
            "the training corpus is empty", hint="give a corpus with some text in it"
        )
    return specials


def count_chunks(text: str, pattern: str, special_tokens: Iterable[str] = ()) -> Counter[str]:
    """How often each pre-tokenized chunk occurs; special-token strings are cut out first, so
    no merge ever learns (a piece of) a special token."""
    pretokenizer = get_pretokenizer(pattern)
    specials = sorted(special_tokens, key=len, reverse=True)
    if not specials:
        return Counter(pretokenizer.split(text))
    counts: Counter[str] = Counter()
    splitter = regex.compile("|".join(regex.escape(s) for s in specials))
    for piece in splitter.split(text):
        counts.update(pretokenizer.split(piece))
    return counts


def assign_special_ids(vocab_len: int, specials: list[str]) -> dict[str, int]:
    """Special tokens take the ids right after the last ordinary token, in the order given."""
    return {token: vocab_len + i for i, token in enumerate(specials)}
