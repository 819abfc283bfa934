"""BPE on a long chunk in O(n log n): a queue of merge ranks, each with the positions of its pair.

The short-chunk loop in chunk_bpe.py rescans the whole chunk for the lowest-ranked pair before
every merge: n merges times n pairs, quadratic. Text without spaces is one pre-token chunk
(a megabyte of it took minutes), so long chunks take this path instead. The rule it applies is
the same (tiktoken's and HF's): merge the adjacent pair of lowest rank, the leftmost first,
one occurrence at a time, until no adjacent pair has a rank.

    parts:    a doubly linked list over the chunk's symbols (nxt/prv indices; a merge keeps
              the left part and unlinks the right one, so positions never move)
    buckets:  rank -> positions whose pair had that rank when it was formed
    queue:    a heap of the ranks that have a bucket

    pop the lowest rank r; sort its positions (leftmost first); for each position whose pair
    still has rank r (lazy invalidation: a merge nearby may have changed it), merge it and put
    the two new pairs (left neighbour + merged, merged + right neighbour) into their buckets.

Each merge does O(1) work plus its bucket appends; sorting the buckets and the heap cost
O(n log n) in all. A merge never forms a new pair of the rank being processed (the new pair's
bytes are longer than token r's), so finishing bucket r before the next rank is exact, with one
exception handled below: a merge list that is not causal (a merge that uses token t ranked
before the merge that makes t) can form a pair ranked below r; then the rest of bucket r goes
back into the queue and the lower rank runs first, as in the one-at-a-time rule.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping

import numpy as np

NO_RANK = 1 << 62
# The end marker: three characters, so that neither a pair with it nor "" + it (a merged-away
# part read through a stale entry) is ever a pair key, which always has 2 characters.
_END = "\0\0\0"


class PairTable:
    """The pair ranks as numpy arrays, to rank all the initial pairs of a long chunk in one
    vectorized step instead of a dict lookup each: a 256 x 256 table for pairs of ids below 256
    (the byte tokens of most vocabularies), else a search in the sorted keys
    (left id << 21 | right id)."""

    def __init__(self, pair_rank: Mapping[str, int]) -> None:
        keys = np.fromiter((ord(k[0]) << 21 | ord(k[1]) for k in pair_rank), np.int64)
        ranks = np.fromiter(pair_rank.values(), np.int64, len(pair_rank))
        order = np.argsort(keys)
        self.keys, self.ranks = keys[order], ranks[order]
        self.byte_pairs = np.full((256, 256), NO_RANK, np.int64)
        small = (keys >> 21 < 256) & (keys & (1 << 21) - 1 < 256)
        self.byte_pairs[keys[small] >> 21, keys[small] & (1 << 21) - 1] = ranks[small]

    def ranks_of_pairs(self, symbols: str) -> np.ndarray:
        """The rank of each adjacent pair of `symbols` (NO_RANK where there is none)."""
        ids = np.frombuffer(symbols.encode("utf-32-le", "surrogatepass"), np.uint32)
        if ids.max() < 256:
            return self.byte_pairs[ids[:-1], ids[1:]]
        keys = ids[:-1].astype(np.int64) << 21 | ids[1:]
        if len(self.keys) == 0:
            return np.full(len(keys), NO_RANK, np.int64)
        at = np.minimum(np.searchsorted(self.keys, keys), len(self.keys) - 1)
        return np.where(self.keys[at] == keys, self.ranks[at], NO_RANK)


def initial_buckets(symbols: str, table: PairTable) -> dict[int, list[int]]:
    """rank -> positions (ascending) of the chunk's initial pairs, grouped by a stable argsort."""
    ranks = table.ranks_of_pairs(symbols)
    order = np.argsort(ranks, kind="stable")
    sorted_ranks = ranks[order]
    cuts = (np.flatnonzero(sorted_ranks[1:] != sorted_ranks[:-1]) + 1).tolist()
    bounds = [0, *cuts, len(ranks)]
    firsts = sorted_ranks[bounds[:-1]].tolist()
    positions = order.tolist()
    buckets = {r: positions[a:b] for r, a, b in zip(firsts, bounds, bounds[1:], strict=False)}
    buckets.pop(NO_RANK, None)
    return buckets


def merge_long(
    symbols: str,
    pair_rank: Mapping[str, int],
    pair_merged: Mapping[str, str],
    table: PairTable | None = None,
) -> str:
    """BPE on a symbol string (one character per token id, see chunk_bpe.py); returns the
    merged symbol string. `pair_rank`/`pair_merged`: two-character pair key -> rank / merged
    symbol; `table`: PairTable(pair_rank), built once by the caller (made here if missing)."""
    if len(symbols) < 2:
        return symbols
    rank_of = pair_rank.get
    buckets = initial_buckets(symbols, table or PairTable(pair_rank))
    bucket_of = buckets.get
    queue = list(buckets)
    heapq.heapify(queue)
    push, pop = heapq.heappush, heapq.heappop
    # parts[i] is "" once merged away; index len(symbols) is an end marker that forms no pair
    # on either side (prv[0] = -1 also lands on it).
    parts = [*symbols, _END]
    nxt = list(range(1, len(parts) + 1))
    prv = list(range(-1, len(parts) - 1))
    while queue:
        rank = pop(queue)
        positions = buckets.pop(rank)
        positions.sort()
        for i in positions:
            j = nxt[i]
            key = parts[i] + parts[j]
            if rank_of(key) != rank:
                continue  # stale: this pair was changed by an earlier merge
            merged = parts[i] = pair_merged[key]
            parts[j] = ""
            k = nxt[i] = nxt[j]
            prv[k] = i
            # the two new pairs: merged + right neighbour at i, left neighbour + merged at h
            lower = False
            new_rank = rank_of(merged + parts[k])
            if new_rank is not None:
                bucket = bucket_of(new_rank)
                if bucket is None:
                    buckets[new_rank] = [i]
                    push(queue, new_rank)
                    lower = new_rank < rank
                else:
                    bucket.append(i)
            h = prv[i]
            new_rank = rank_of(parts[h] + merged)
            if new_rank is not None:
                bucket = bucket_of(new_rank)
                if bucket is None:
                    buckets[new_rank] = [h]
                    push(queue, new_rank)
                    lower = lower or new_rank < rank
                else:
                    bucket.append(h)
            if lower:  # a non-causal merge list: run the lower rank before the rest of this one
                buckets[rank] = positions[positions.index(i) + 1 :]  # duplicates of i: stale
                push(queue, rank)
                break
    parts.pop()
    return "".join(parts)
