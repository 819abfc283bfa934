"""A character-level tokenizer: one id per distinct character of the training text.

The simplest tokenizer there is (nanoGPT's shakespeare_char): the vocabulary is the sorted set of
characters seen in the corpus, `encode` maps each character to its index and `decode` maps back.
Sequences are as long as the text (BPE makes them ~4x shorter), but the vocabulary is tiny (65
symbols for Shakespeare), so the output layer is cheap. It shares the interface the trainer uses
with the BPE `Tokenizer`: encode, decode, vocab_size, eot_id, save, load, fingerprint.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

from llm_internals.errors import LLMInternalsError
from llm_internals.files import atomic_write_text, read_json

FORMAT_NAME = "llm-internals-char-tokenizer"
FORMAT_VERSION = 1


class CharTokenizer:
    """Characters <-> ids, with ids assigned in sorted character order."""

    def __init__(self, chars: Iterable[str]) -> None:
        chars = list(chars)
        if not chars:
            raise LLMInternalsError("a character tokenizer needs at least one character")
        bad = [c for c in chars if not isinstance(c, str) or len(c) != 1]
        if bad:
            raise LLMInternalsError(
                f"character tokenizer entries must be single characters, got {bad[0]!r}"
            )
        if len(set(chars)) != len(chars):
            repeated = next(c for c in chars if chars.count(c) > 1)
            raise LLMInternalsError(f"character {repeated!r} appears twice in the vocabulary")
        self.chars: list[str] = chars
        self._id_of = {c: i for i, c in enumerate(chars)}

    @classmethod
    def train(cls, text: str) -> CharTokenizer:
        """The vocabulary of `text`: its distinct characters, sorted by code point."""
        return cls(sorted(set(text)))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    @property
    def eot_id(self) -> int | None:
        """Character vocabularies have no end-of-text token."""
        return None

    def encode(self, text: str) -> list[int]:
        try:
            return [self._id_of[c] for c in text]
        except KeyError as err:
            raise LLMInternalsError(
                f"character {err.args[0]!r} is not in this tokenizer's {self.vocab_size}-character "
                "vocabulary",
                hint="train the character tokenizer on a text that contains it",
            ) from None

    def decode(self, ids: Iterable[int]) -> str:
        try:
            return "".join(self.chars[i] for i in ids)
        except (IndexError, TypeError):
            raise LLMInternalsError(
                f"ids must be integers in [0, {self.vocab_size}) for this character tokenizer"
            ) from None

    def fingerprint(self) -> str:
        """A hash of the vocabulary: token files encoded with another vocabulary are stale."""
        return hashlib.sha256("".join(self.chars).encode("utf-8", "surrogatepass")).hexdigest()

    def save(self, path: str | Path) -> None:
        """Write the vocabulary as JSON (atomically)."""
        data = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "chars": self.chars}
        atomic_write_text(Path(path), json.dumps(data, ensure_ascii=True) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> CharTokenizer:
        path = Path(path)
        data = read_json(path, "character tokenizer file")
        if data.get("format") != FORMAT_NAME:
            raise LLMInternalsError(
                f"{path}: not a character tokenizer (field 'format' is not {FORMAT_NAME!r})"
            )
        if data.get("format_version") != FORMAT_VERSION:
            raise LLMInternalsError(
                f"{path}: format_version {data.get('format_version')!r} is not supported"
            )
        chars = data.get("chars")
        if not isinstance(chars, list):
            raise LLMInternalsError(f"{path}: field 'chars' must be a list of characters")
        return cls(chars)

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size})"
