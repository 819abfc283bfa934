"""BPE inside one pre-tokenized chunk: merge tables, the merge loop, and the chunk cache.

Representation: a chunk's tokens are held as a str with one character chr(id) per token id (a
"symbol string"). An adjacent pair is then a 2-character str, a cheap dict key; all pairs of a
chunk are `map(add, s, s[1:])`, ranked by `map(rank_of, ...)` and `min`, all inside C; and a
merge is `s.replace(pair, chr(new_id), 1)`, which replaces the leftmost occurrence.

The rule (tiktoken's and HF's): start from one symbol per byte, merge the adjacent pair of
lowest rank (the leftmost of equal ranks), one occurrence at a time, until no adjacent pair has
a rank. The loop here rescans the chunk before each merge (quadratic, but in C and fastest on
the short chunks of ordinary text); chunks longer than LONG_CHUNK symbols (text without spaces)
go to the O(n log n) merge queue of merge_queue.py, which applies the same rule.
Two ranking rules:
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
from llm_internals.tokenizer.merge_queue import NO_RANK, PairTable, merge_long
from llm_internals.trace import is_recording, record

MAX_TOKEN_ID = 0x10FFFF  # chr()'s limit: a symbol string holds one id per character
LONG_CHUNK = 24  # symbols; longer chunks take the merge queue (crossover measured: LOG.md)
CACHED_CHUNK_CHARS = 256  # longer chunks (rare but for text without spaces) are not cached
NO_RANKS = repeat(NO_RANK)  # endless defaults for `pair_rank.get` in `map`
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
    so it is bounded between calls; chunks longer than CACHED_CHUNK_CHARS are not kept.
    """

    __slots__ = ("encode",)

    def __init__(self, encode: Callable[[str], str]) -> None:
        super().__init__()
        self.encode = encode

    def __missing__(self, chunk: str) -> str:
        symbols = self.encode(chunk)
        if len(chunk) <= CACHED_CHUNK_CHARS:  # keeps the cache's memory bounded
            self[chunk] = symbols
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
            None
            if identity  # a byte with no token maps to None: translate() drops it
            else {b: None if i is None else chr(i) for b, i in enumerate(self.byte_ids)}
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
            translated = symbols.translate(self.byte_translation)
            if len(translated) != len(symbols):  # bytes without a token were dropped
                missing = next(ord(c) for c in symbols if self.byte_ids[ord(c)] is None)
                raise LLMInternalsError(
                    f"byte 0x{missing:02x} of {chunk[:80]!r} has no token in this vocabulary"
                )
            symbols = translated
        return symbols

    def encode(self, chunk: str) -> str:
        """The chunk's tokens as a symbol string, the readable way; records each merge under
        "bpe.encode_step" when an explain recorder is active.

        Rule (tiktoken's and HF's): if the whole chunk is a token and ignore_merges is set,
        that token; otherwise start from one symbol per byte and merge the adjacent pair of
        lowest rank, leftmost first, one occurrence at a time, until no pair has a rank.
        """
        if self.ignore_merges:
            whole = self.id_of.get(chunk.encode("utf-8"))
            if whole is not None:
                return chr(whole)
        symbols = self.initial_symbols(chunk)
        recording = is_recording()
        while len(symbols) > 1:
            best_rank = min(map(self.pair_rank.get, map(add, symbols, symbols[1:]), NO_RANKS))
            if best_rank == NO_RANK:
                break
            position, pair = min(
                (symbols.find(c), c) for c in self.rank_pairs[best_rank] if c in symbols
            )
            merged = symbols[:position] + self.pair_merged[pair] + symbols[position + 2 :]
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
        """`encode` without recording, as a closure over local names (the cold-cache hot path).
        Chunks longer than LONG_CHUNK take the O(n log n) merge queue (merge_queue.py); shorter
        ones the rescanning loop, whose scans run in C and win on short chunks. Both apply the
        same rule, so they give the same tokens (tested)."""
        rank_of = self.pair_rank.get
        pair_rank = self.pair_rank
        merged_of = self.pair_merged
        single = self.rank_single
        pairs_of_rank = self.rank_pairs
        id_of = self.id_of if self.ignore_merges else None
        ascii_is_symbols = self.byte_translation is None
        initial_symbols = self.initial_symbols
        long_chunk = LONG_CHUNK
        no_rank = NO_RANK
        no_ranks = NO_RANKS
        table: list[PairTable] = []  # made on the first long chunk

        def encode(chunk: str) -> str:
            if id_of is not None:
                whole = id_of.get(chunk.encode("utf-8"))
                if whole is not None:
                    return chr(whole)
            symbols = chunk if ascii_is_symbols and chunk.isascii() else initial_symbols(chunk)
            if len(symbols) > long_chunk:
                if not table:
                    table.append(PairTable(pair_rank))
                return merge_long(symbols, pair_rank, merged_of, table[0])
            while len(symbols) > 1:
                best_rank = min(map(rank_of, map(add, symbols, symbols[1:]), no_ranks))
                if best_rank == no_rank:
                    break
                step = single.get(best_rank)
                if step is None:  # several pairs share the rank: the leftmost wins
                    candidates = pairs_of_rank[best_rank]
                    pair = min((symbols.find(c), c) for c in candidates if c in symbols)[1]
                    step = (pair, merged_of[pair])
                symbols = symbols.replace(*step, 1)  # the leftmost occurrence only
            return symbols

        return encode
