"""The Tokenizer: byte-level BPE encoding and decoding with special tokens and a chunk cache.

Encoding a text: cut out special tokens that are allowed (tiktoken's `allowed_special`
semantics: a special token in the text that is not allowed is an error, unless it is also not
disallowed, in which case it is ordinary text), pre-tokenize the rest into chunks, and run BPE
inside each chunk (chunk_bpe.py).

Distinct chunks are few (36k in 1.4M for Shakespeare), so chunk encodings are cached in a
bounded dict; the work per chunk occurrence is then a dict lookup, and a whole text becomes one
symbol string (`"".join`) converted to ids in one C call.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from itertools import accumulate, chain
from pathlib import Path
from typing import Literal

import regex

from llm_internals.errors import LLMInternalsError
from llm_internals.tokenizer.chunk_bpe import ChunkBPE, ChunkCache, symbols_to_ids
from llm_internals.tokenizer.gc_pause import gc_paused
from llm_internals.tokenizer.pretokenize import get_pretokenizer, resolve_pattern
from llm_internals.tokenizer.token_ids import check_token_ids
from llm_internals.trace import is_recording

NORMALIZATIONS = (None, "NFC", "NFKC")
EOT_NAMES = ("<|endoftext|>", "<|end_of_text|>", "<|eot_id|>", "</s>", "<eos>")


class Tokenizer:
    """Byte-level BPE. Ordinary tokens are byte strings; special tokens are reserved strings.

    vocab: id -> bytes for ordinary tokens (all 256 single bytes must be present to encode).
    merges: (left id, right id) pairs in rank order; the merged token is the one whose bytes are
        left + right. Ignored when merge_ranks="token_id".
    """

    def __init__(
        self,
        vocab: Mapping[int, bytes],
        merges: Sequence[tuple[int, int]] = (),
        special_tokens: Mapping[str, int] | None = None,
        pattern: str = "gpt2",
        *,
        merge_ranks: Literal["merges", "token_id"] = "merges",
        ignore_merges: bool = False,
        normalization: str | None = None,
        cache_size: int = 100_000,
    ) -> None:
        self.vocab: dict[int, bytes] = dict(vocab)
        self.special_tokens: dict[str, int] = dict(special_tokens or {})
        check_token_ids(self.vocab, self.special_tokens)
        self.pattern = resolve_pattern(pattern)
        self.merge_ranks = merge_ranks
        self.ignore_merges = ignore_merges
        if normalization not in NORMALIZATIONS:
            raise LLMInternalsError(
                f"unknown normalization {normalization!r}", hint="use none, NFC or NFKC"
            )
        self.normalization = normalization  # Unicode normal form applied before encoding
        self.cache_size = cache_size
        self._pretokenizer = get_pretokenizer(self.pattern, must_cover=True)
        self._id_of: dict[bytes, int] = {}
        for token_id, token in self.vocab.items():
            if token in self._id_of:
                raise LLMInternalsError(
                    f"tokens {self._id_of[token]} and {token_id} have the same bytes {token!r}"
                )
            self._id_of[token] = token_id
        clash = set(self.special_tokens.values()) & set(self.vocab)
        if clash:
            raise LLMInternalsError(f"special token ids {sorted(clash)} are also ordinary tokens")
        self._decoder = dict(self.vocab)
        self._decoder.update({i: s.encode("utf-8") for s, i in self.special_tokens.items()})
        self._bpe = ChunkBPE(self.vocab, self._id_of, merges, merge_ranks, ignore_merges)
        self.merges: list[tuple[int, int]] = self._bpe.merges
        self._cache = ChunkCache(self._bpe.fast_encoder())  # chunk -> symbol string
        self._special_regex = None
        if self.special_tokens:
            by_length = sorted(self.special_tokens, key=len, reverse=True)
            self._special_regex = regex.compile("|".join(regex.escape(s) for s in by_length))

    # ----- properties -----------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        """One more than the largest id (ordinary or special): the embedding table's size."""
        return max(chain(self.vocab, self.special_tokens.values()), default=-1) + 1

    @property
    def eot_id(self) -> int | None:
        """The id of the end-of-text special token, if there is one."""
        for name in EOT_NAMES:
            if name in self.special_tokens:
                return self.special_tokens[name]
        return None

    def clear_cache(self) -> None:
        """Forget cached chunk encodings (benchmarks measure the cold path with it)."""
        self._cache.clear()

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes of one token (a special token's UTF-8 text)."""
        return self.decode_bytes([token_id])

    # ----- encoding -------------------------------------------------------------------------
    def _encode_chunk(self, chunk: str) -> list[int]:
        """BPE on one pre-tokenized chunk (records each merge under an explain recorder)."""
        return list(map(ord, self._bpe.encode(chunk)))

    def _table(self) -> ChunkCache:
        """Where chunk encodings are looked up: the cache, or a fresh table while recording
        (the explain path wants to see every merge, not cached answers)."""
        if is_recording():
            return ChunkCache(self._bpe.encode)
        return self._cache

    def _trim_cache(self) -> None:
        if len(self._cache) > self.cache_size:
            self._cache.clear()

    def encode_ordinary(self, text: str) -> list[int]:
        """Encode `text` ignoring special tokens (their text is encoded as ordinary bytes)."""
        if self.normalization is not None:
            text = unicodedata.normalize(self.normalization, text)
        with gc_paused():
            chunks = self._pretokenizer.split(text)
            symbols = "".join(map(self._table().__getitem__, chunks))
            self._trim_cache()
            return symbols_to_ids(symbols)

    def encode_ordinary_batch(self, texts: Iterable[str]) -> list[list[int]]:
        """`encode_ordinary` of each text, sharing the chunk cache and one id conversion."""
        if self.normalization is not None:
            texts = [unicodedata.normalize(self.normalization, t) for t in texts]
        with gc_paused():
            get = self._table().__getitem__
            join = "".join
            per_symbols = [
                join(map(get, chunks)) for chunks in self._pretokenizer.split_many(texts)
            ]
            self._trim_cache()
            # one C conversion for the whole batch, then cut it back into texts
            ids = symbols_to_ids(join(per_symbols))
            ends = list(accumulate(map(len, per_symbols)))
            return [ids[start:end] for start, end in zip([0, *ends], ends, strict=False)]

    def _resolve_specials(
        self, allowed_special: Collection[str] | str, disallowed_special: Collection[str] | str
    ) -> tuple[set[str], set[str]]:
        allowed = set(self.special_tokens) if allowed_special == "all" else set(allowed_special)
        unknown = allowed - set(self.special_tokens)
        if unknown:
            raise LLMInternalsError(
                f"unknown special token(s) {sorted(unknown)} in allowed_special",
                hint=f"this tokenizer's special tokens: {sorted(self.special_tokens) or 'none'}",
            )
        if disallowed_special == "all":
            disallowed = set(self.special_tokens) - allowed
        else:
            disallowed = set(disallowed_special)
        return allowed, disallowed

    def encode(
        self,
        text: str,
        allowed_special: Collection[str] | Literal["all"] = frozenset(),
        disallowed_special: Collection[str] | Literal["all"] = "all",
    ) -> list[int]:
        """Encode `text`; special tokens are encoded as their ids only where allowed.

        As in tiktoken: a disallowed special token's text in `text` raises (by default every
        special token not allowed is disallowed); pass disallowed_special=() to encode such
        text as ordinary bytes instead (the CLI's --allow-special / --special-as-text).
        """
        if self._special_regex is None:
            return self.encode_ordinary(text)
        allowed, disallowed = self._resolve_specials(allowed_special, disallowed_special)
        for token in disallowed:
            if token in text:
                raise LLMInternalsError(
                    f"text contains the special token {token!r}, which is not allowed here",
                    hint="pass --allow-special to encode it as one special token, or "
                    "--special-as-text to encode it as ordinary text",
                )
        if not allowed:
            return self.encode_ordinary(text)
        ids: list[int] = []
        start = 0
        for match in self._special_regex.finditer(text):
            if match.group() not in allowed:
                continue
            ids += self.encode_ordinary(text[start : match.start()])
            ids.append(self.special_tokens[match.group()])
            start = match.end()
        ids += self.encode_ordinary(text[start:])
        return ids

    def encode_iterable(
        self,
        texts: Iterable[str],
        allowed_special: Collection[str] | Literal["all"] = frozenset(),
        disallowed_special: Collection[str] | Literal["all"] = "all",
    ) -> Iterator[int]:
        """Yield the ids of `encode("".join(texts))` lazily, in memory bounded by a 64k-character
        buffer and the longest chunk (e.g. `tok.encode_iterable(open(path))`); streaming.py."""
        from llm_internals.tokenizer.streaming import encode_iterable

        return encode_iterable(self, texts, allowed_special, disallowed_special)

    def encode_batch(
        self,
        texts: Iterable[str],
        allowed_special: Collection[str] | Literal["all"] = frozenset(),
        disallowed_special: Collection[str] | Literal["all"] = "all",
    ) -> list[list[int]]:
        """`encode` of each text (texts without special tokens share one batched pass)."""
        texts = list(texts)
        if self._special_regex is None or not any(self._special_regex.search(t) for t in texts):
            return self.encode_ordinary_batch(texts)
        return [self.encode(t, allowed_special, disallowed_special) for t in texts]

    # ----- decoding -------------------------------------------------------------------------
    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """Concatenate the bytes of `ids` (a list, or a tensor/array via .tolist()); an unknown
        id is an error naming it."""
        ids = ids.tolist() if hasattr(ids, "tolist") else list(ids)
        try:
            return b"".join(map(self._decoder.__getitem__, ids))
        except (KeyError, TypeError):
            bad = next(i for i in ids if not isinstance(i, int) or i not in self._decoder)
            raise LLMInternalsError(
                f"token id {bad!r} is not in this tokenizer's vocabulary "
                f"(vocab_size {self.vocab_size})"
            ) from None

    def decode(self, ids: Iterable[int], errors: str = "replace") -> str:
        """Decode ids to text. Bytes that are not valid UTF-8 (an id sequence can cut a
        character in half) become U+FFFD by default; errors="strict" raises UnicodeDecodeError."""
        return self.decode_bytes(ids).decode("utf-8", errors=errors)

    def pieces(self, ids: Iterable[int]) -> list[bytes]:
        """Each id's bytes, for showing how a text was cut."""
        return [self.token_bytes(i) for i in ids]

    # ----- formats (see formats.py) ---------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """Write our versioned JSON format atomically."""
        from llm_internals.tokenizer.own_json import save_json

        save_json(self, Path(path))

    @classmethod
    def load(cls, path: str | Path, pattern: str | None = None) -> Tokenizer:
        """Load our JSON, an HF tokenizer.json (file or its folder) or a tiktoken rank file."""
        from llm_internals.tokenizer.formats import load_any

        return load_any(Path(path), pattern)

    @classmethod
    def from_vocab_merges(
        cls,
        vocab: Mapping[int, bytes],
        merges: Iterable[tuple[bytes, bytes]],
        special_tokens: Iterable[str] | Mapping[str, int] = (),
        pattern: str = "gpt2",
    ) -> Tokenizer:
        """From a vocabulary (id -> bytes), merges as byte pairs in rank order and special
        tokens (see vocab_merges.py)."""
        from llm_internals.tokenizer.vocab_merges import from_vocab_merges

        return from_vocab_merges(vocab, merges, special_tokens, pattern)

    @classmethod
    def from_hf(cls, source: str | Path | Mapping) -> Tokenizer:
        """From an HF tokenizer.json (path, folder holding one, or its parsed dict)."""
        from llm_internals.tokenizer.hf_json import from_hf

        return from_hf(source)

    def to_hf(self, path: str | Path | None = None) -> dict:
        """HF tokenizer.json content (ByteLevel BPE); written atomically when `path` is given."""
        from llm_internals.tokenizer.hf_json import to_hf

        return to_hf(self, None if path is None else Path(path))

    @classmethod
    def from_tiktoken(
        cls,
        source: str | Path | Mapping[bytes, int],
        pattern: str = "gpt4",
        special_tokens: Mapping[str, int] | None = None,
    ) -> Tokenizer:
        """From a tiktoken rank file (or a mergeable_ranks dict) plus pattern and specials."""
        from llm_internals.tokenizer.tiktoken_file import from_tiktoken

        return from_tiktoken(source, pattern, special_tokens)

    def to_tiktoken(self, path: str | Path | None = None) -> dict[bytes, int]:
        """The mergeable ranks (token bytes -> id); written as a rank file when `path` is given."""
        from llm_internals.tokenizer.tiktoken_file import to_tiktoken

        return to_tiktoken(self, None if path is None else Path(path))

    def __repr__(self) -> str:
        return (
            f"Tokenizer(vocab_size={self.vocab_size}, merges={len(self.merges)}, "
            f"special_tokens={len(self.special_tokens)}, merge_ranks={self.merge_ranks!r})"
        )
