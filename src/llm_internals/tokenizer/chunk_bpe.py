"""BPE inside one pre-tokenized chunk: merge tables, the merge loop, and the chunk cache.

Representation: a chunk's tokens are held as a str with one character chr(id) per token id (a
"symbol string"). An adjacent pair is then a 2-character str, a cheap dict key; all pairs of a
chunk are `map(add, s, s[1:])`, ranked by `map(rank_of, ...)` and `min`, all inside C; and a
merge is `s.replace(pair, chr(new_id))`, which scans left to right without overlaps: exactly
the BPE rule of merging the leftmost occurrence first.

The loop: start from one symbol per byte, find the lowest rank among adjacent pairs, replace
that pair everywhere, repeat until no adjacent pair has a rank. Two ranking rules:
- "merges" (our trainer, HF): rank = position in the merge list; the merged token is the one
  whose bytes are left + right.
- "token_id" (tiktoken): any pair whose concatenated bytes are a token may merge, rank = that
  token's id. One token can have several splits with the same rank; the leftmost one wins,
  as in tiktoken.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Mapping, Sequence
from itertools import repeat
from operator import add

from llm_internals.errors import LLMInternalsError
from llm_internals.trace import is_recording, record

NO_RANK = 1 << 62
_UINT32 = "I" if array("I").itemsize == 4 else "L" if array("L").itemsize == 4 else None


def symbols_to_ids(symbols: str) -> list[int]:
    """Token ids from a symbol string, converted in C: the UTF-32 code units of the string are
    the ids (lone surrogates pass through for ids 0xD800-0xDFFF)."""
    if _UINT32 is None:
        return list(map(ord, symbols))
    return array(_UINT32, symbols.encode("utf-32-le", "surrogatepass")).tolist()


class ChunkCache(dict):
    """chunk -> its symbol string; a missing chunk is encoded on first lookup.

    `map(cache.__getitem__, chunks)` stays in C for hits and calls the encoder only for chunks
    not seen before. The Tokenizer clears it after a call that leaves it above its size limit,
    so it is bounded between calls.
    """

    __slots__ = ("encode",)

    def __init__(self, encode: Callable[[str], str]) -> None:
        super().__init__()
        self.encode = encode

    def __missing__(self, chunk: str) -> str:
        symbols = self[chunk] = self.encode(chunk)
        return symbols


class ChunkBPE:
    """Merge tables of a vocabulary and the BPE loop over one chunk."""

    def __init__(
        self,
        vocab: Mapping[int, bytes],
        id_of: Mapping[bytes, int],
        merges: Sequence[tuple[int, int]],
        merge_ranks: str,
        ignore_merges: bool,
    ) -> None:
        self.id_of = id_of
        self.ignore_merges = ignore_merges
        self.byte_ids = [id_of.get(bytes([b])) for b in range(256)]
        identity = all(self.byte_ids[b] == b for b in range(256))
        self.byte_translation = (
            None if identity else {b: chr(i) for b, i in enumerate(self.byte_ids) if i is not None}
        )
        self.pair_rank: dict[str, int] = {}  # chr(left) + chr(right) -> rank
        self.pair_merged: dict[str, str] = {}  # chr(left) + chr(right) -> chr(merged id)
        if merge_ranks == "token_id":
            for token, token_id in id_of.items():
                for k in range(1, len(token)):
                    left, right = id_of.get(token[:k]), id_of.get(token[k:])
                    if left is not None and right is not None:
                        key = chr(left) + chr(right)
                        self.pair_rank[key] = token_id
                        self.pair_merged[key] = chr(token_id)
            self.merges = sorted(
                ((ord(k[0]), ord(k[1])) for k in self.pair_rank),
                key=lambda p: (self.pair_rank[chr(p[0]) + chr(p[1])], p),
            )
        elif merge_ranks == "merges":
            self.merges = [(int(a), int(b)) for a, b in merges]
            for rank, (left, right) in enumerate(self.merges):
                if left not in vocab or right not in vocab:
                    raise LLMInternalsError(
                        f"merge {rank} ({left}, {right}) uses an unknown token id"
                    )
                merged = id_of.get(vocab[left] + vocab[right])
                if merged is None:
                    raise LLMInternalsError(
                        f"merge {rank} ({left}, {right}) makes bytes "
                        f"{vocab[left] + vocab[right]!r} that are not in the vocabulary"
                    )
                key = chr(left) + chr(right)
                self.pair_rank.setdefault(key, rank)
                self.pair_merged.setdefault(key, chr(merged))
        else:
            raise LLMInternalsError(f"unknown merge_ranks {merge_ranks!r}")
        by_rank: dict[int, list[str]] = {}
        for key, rank in self.pair_rank.items():
            by_rank.setdefault(rank, []).append(key)
        self.rank_pairs = {rank: tuple(keys) for rank, keys in by_rank.items()}
        self.rank_single = {
            rank: (keys[0], self.pair_merged[keys[0]])
            for rank, keys in by_rank.items()
            if len(keys) == 1
        }

    def initial_symbols(self, chunk: str) -> str:
        """One symbol per UTF-8 byte of `chunk` (a clear error for a byte with no token)."""
        symbols = chunk.encode("utf-8").decode("latin-1")
        if self.byte_translation is not None:
            missing = [ord(c) for c in symbols if self.byte_ids[ord(c)] is None]
            if missing:
                raise LLMInternalsError(
                    f"byte 0x{missing[0]:02x} of {chunk!r} has no token in this vocabulary"
                )
            symbols = symbols.translate(self.byte_translation)
        return symbols

    def encode(self, chunk: str) -> str:
        """The chunk's tokens as a symbol string; records each merge under "bpe.encode_step"
        when an explain recorder is active."""
        if self.ignore_merges:
            whole = self.id_of.get(chunk.encode("utf-8"))
            if whole is not None:
                return chr(whole)
        symbols = self.initial_symbols(chunk)
        rank_of = self.pair_rank.get
        recording = is_recording()
        while len(symbols) > 1:
            best_rank = min(map(rank_of, map(add, symbols, symbols[1:]), repeat(NO_RANK)))
            if best_rank == NO_RANK:
                break
            candidates = self.rank_pairs[best_rank]
            pair = min((symbols.find(c), c) for c in candidates if c in symbols)[1]
            merged = symbols.replace(pair, self.pair_merged[pair])
            if recording:
                record(
                    "bpe.encode_step",
                    {
                        "before": [ord(c) for c in symbols],
                        "pair": (ord(pair[0]), ord(pair[1])),
                        "rank": best_rank,
                        "after": [ord(c) for c in merged],
                    },
                )
            symbols = merged
        return symbols

    def fast_encoder(self) -> Callable[[str], str]:
        """`encode` as a closure over local names, without recording (the cold-cache hot path);
        with byte ids 0..255 an ASCII chunk already is its own initial symbol string."""
        if self.ignore_merges or self.byte_translation is not None:
            return self.encode
        rank_of = self.pair_rank.get
        merged_of = self.pair_merged
        single = self.rank_single
        pairs_of_rank = self.rank_pairs
        no_rank = NO_RANK
        no_ranks = repeat(no_rank)  # endless defaults for rank_of, shared by every call

        def encode(chunk: str) -> str:
            symbols = chunk if chunk.isascii() else chunk.encode("utf-8").decode("latin-1")
            while len(symbols) > 1:
                best_rank = min(map(rank_of, map(add, symbols, symbols[1:]), no_ranks))
                if best_rank == no_rank:
                    break
                step = single.get(best_rank)
                if step is None:  # several pairs share the rank: the leftmost wins
                    candidates = pairs_of_rank[best_rank]
                    pair = min((symbols.find(c), c) for c in candidates if c in symbols)[1]
                    step = (pair, merged_of[pair])
                symbols = symbols.replace(*step)
            return symbols

        return encode
