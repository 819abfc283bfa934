"""The block manager: which physical KV blocks belong to which sequence.

The KV pool is cut into blocks of `block_size` token slots. Like virtual memory pages, a
sequence's logical blocks (positions 0..bs-1, bs..2bs-1, ...) map to any physical blocks through
its block table, so memory is handed out one block at a time as the sequence grows: at most one
partly filled block per sequence is wasted, instead of a reservation for the maximum length.

Every block is in exactly one of three states:

    free       ref_count 0, no content worth keeping          (free_block_ids, FIFO)
    in use     ref_count >= 1: that many block tables hold it
    cached     ref_count 0 but holds a full block of known tokens (evictable_block_ids, LRU)

Sharing. Several tables may hold one block (ref_count counts them): parallel samples of one
prompt, and requests with a common prefix. A shared block is never written in place: before a
sequence writes into a shared, partly filled block, it gets a private copy (copy-on-write) and
the caller copies the K/V already there.

Prefix caching. A full block is named by a hash chained over all tokens up to its end:

    h_0 = H(root, tokens[0:bs]),  h_i = H(h_{i-1}, tokens[i*bs:(i+1)*bs])

so equal hashes mean equal prefixes, not just equal blocks. A new request looks its blocks up in
`cached_block_ids` (hash -> block) and reuses the longest run of hits; the K/V there is exactly
what it would compute. When a sequence frees a block that has a hash, the block stays cached
(ref_count 0); it is evicted, least recently used first, only when the free list is empty.
"""

from __future__ import annotations

import hashlib
from array import array
from collections import OrderedDict, deque
from collections.abc import Sequence as SequenceOf
from dataclasses import dataclass
from types import MappingProxyType

from llm_internals.errors import LLMInternalsError
from llm_internals.inference.paged.sequence import Sequence
from llm_internals.inference.paged.snapshot import BlockInfo, PoolSnapshot, SequenceInfo

ROOT_HASH = 0


def block_hash(previous: int, token_ids: SequenceOf[int]) -> int:
    """64-bit hash of a full block's tokens chained to the hash of the block before it."""
    digest = hashlib.blake2b(digest_size=8)
    digest.update(previous.to_bytes(8, "little"))
    digest.update(array("q", token_ids).tobytes())
    return int.from_bytes(digest.digest(), "little")


@dataclass
class Block:
    """One physical block: how many tables hold it, and (when full and cached) its hash."""

    block_id: int
    ref_count: int = 0
    hash: int | None = None
    token_ids: tuple[int, ...] = ()  # the tokens behind `hash` (guards against collisions)


class BlockManager:
    """Allocates, shares, copies on write, and caches the blocks of a pool of `num_blocks`."""

    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True):
        for name, value in (("num_blocks", num_blocks), ("block_size", block_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise LLMInternalsError(f"block manager: {name} must be >= 1, got {value!r}")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.blocks = [Block(i) for i in range(num_blocks)]
        self.free_block_ids: deque[int] = deque(range(num_blocks))
        self.cached_block_ids: dict[int, int] = {}  # hash -> block id (in use or evictable)
        self.evictable_block_ids: OrderedDict[int, None] = OrderedDict()  # LRU first
        self.prefix_queried_tokens = 0
        self.prefix_hit_tokens = 0
        self.evictions = 0

    # --- counts ---------------------------------------------------------------------------
    @property
    def num_available_blocks(self) -> int:
        """Blocks that can be handed out now: free ones plus evictable cached ones."""
        return len(self.free_block_ids) + len(self.evictable_block_ids)

    @property
    def num_used_blocks(self) -> int:
        return self.num_blocks - self.num_available_blocks

    @property
    def prefix_hit_rate(self) -> float:
        return (
            self.prefix_hit_tokens / self.prefix_queried_tokens
            if self.prefix_queried_tokens
            else 0.0
        )

    def blocks_for_tokens(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    # --- prefix cache -----------------------------------------------------------------------
    def match_prefix(self, seq: Sequence) -> list[int]:
        """Cached blocks holding the longest prefix of seq's tokens (changes nothing).

        At least one token is always left to compute: the model must run on the last token to
        produce the logits of the next one.
        """
        if not self.enable_prefix_caching:
            return []
        hits = []
        previous = ROOT_HASH
        for i in range((seq.num_tokens - 1) // self.block_size):
            tokens = seq.token_ids[i * self.block_size : (i + 1) * self.block_size]
            previous = block_hash(previous, tokens)
            block_id = self.cached_block_ids.get(previous)
            if block_id is None or self.blocks[block_id].token_ids != tuple(tokens):
                break
            hits.append(block_id)
        return hits

    def blocks_to_admit(self, hits: list[int], seq: Sequence, num_new_tokens: int) -> int:
        """Available blocks that admitting seq with these hits and new tokens would consume."""
        from_cache = sum(1 for b in hits if self.blocks[b].ref_count == 0)
        fresh = self.blocks_for_tokens(len(hits) * self.block_size + num_new_tokens) - len(hits)
        return from_cache + fresh

    def admit(self, seq: Sequence, hits: list[int]) -> None:
        """Start seq's block table with the cached prefix `hits` (K/V already there)."""
        if seq.block_table:
            raise LLMInternalsError(f"sequence {seq.seq_id} already holds blocks")
        for block_id in hits:
            self._take(block_id)
        seq.block_table = list(hits)
        seq.block_hashes = [self.blocks[b].hash for b in hits]
        seq.num_computed_tokens = len(hits) * self.block_size
        if self.enable_prefix_caching:
            self.prefix_queried_tokens += seq.num_tokens
            self.prefix_hit_tokens += seq.num_computed_tokens

    def register_full_blocks(self, seq: Sequence) -> None:
        """Give every newly filled block of seq its chained hash and enter it in the cache.

        When an equal block is already cached (two equal prompts computed side by side), the
        first stays the cached one; this block stays private and is simply freed later.
        """
        full = seq.num_computed_tokens // self.block_size
        while len(seq.block_hashes) < full:
            i = len(seq.block_hashes)
            tokens = tuple(seq.token_ids[i * self.block_size : (i + 1) * self.block_size])
            previous = seq.block_hashes[-1] if seq.block_hashes else ROOT_HASH
            h = block_hash(previous, tokens)
            seq.block_hashes.append(h)
            if not self.enable_prefix_caching:
                continue
            block = self.blocks[seq.block_table[i]]
            if block.hash is None and h not in self.cached_block_ids:
                block.hash, block.token_ids = h, tokens
                self.cached_block_ids[h] = block.block_id

    # --- growing, sharing, freeing ----------------------------------------------------------
    def blocks_needed(self, seq: Sequence, num_new_tokens: int) -> int:
        """Blocks to take from the pool before seq can store num_new_tokens more tokens
        (new blocks, plus one if the partly filled last block is shared: copy-on-write)."""
        total = self.blocks_for_tokens(seq.num_computed_tokens + num_new_tokens)
        needed = total - len(seq.block_table)
        if self._shared_partial_block(seq) is not None:
            needed += 1
        return max(needed, 0)

    def reserve(self, seq: Sequence, num_new_tokens: int) -> list[tuple[int, int]]:
        """Make room in seq's table for num_new_tokens; return the (source, destination) block
        copies that copy-on-write requires before the new K/V is written."""
        if self.blocks_needed(seq, num_new_tokens) > self.num_available_blocks:
            raise LLMInternalsError(
                f"block manager: sequence {seq.seq_id} needs more blocks than are available"
            )
        copies = []
        shared = self._shared_partial_block(seq)
        if shared is not None:
            position = len(seq.block_table) - 1
            new_id = self._allocate()
            self._release(shared)
            seq.block_table[position] = new_id
            copies.append((shared, new_id))
        total = self.blocks_for_tokens(seq.num_computed_tokens + num_new_tokens)
        while len(seq.block_table) < total:
            seq.block_table.append(self._allocate())
        return copies

    def truncate(self, seq: Sequence) -> None:
        """Release the blocks past seq's computed tokens (slots reserved for draft tokens that
        were rejected, or never proposed). Registered blocks are full of computed tokens, so
        none is released here; the kept last block may hold rejected K/V past the computed
        count: it is unregistered and those slots are written again before they are read."""
        keep = self.blocks_for_tokens(seq.num_computed_tokens)
        while len(seq.block_table) > keep:
            self._release(seq.block_table.pop())

    def fork(self, parent: Sequence, child: Sequence) -> None:
        """child shares all of parent's blocks (its table is a copy of parent's)."""
        child.block_table = list(parent.block_table)
        for block_id in child.block_table:
            self.blocks[block_id].ref_count += 1

    def free(self, seq: Sequence) -> None:
        """Drop seq's references. Tail blocks go first, so a prefix's head outlives its tail
        in the LRU order; blocks with a hash stay cached, the others become free."""
        for block_id in reversed(seq.block_table):
            self._release(block_id)
        seq.block_table = []
        seq.block_hashes = []
        seq.num_computed_tokens = 0

    # --- reading -------------------------------------------------------------------------
    def snapshot(self, seqs: SequenceOf[Sequence] = ()) -> PoolSnapshot:
        """A frozen copy of every block's ref count and hash, the free and evictable lists, the
        prefix-cache index, and the block tables of `seqs` (see paged/snapshot.py)."""
        return PoolSnapshot(
            block_size=self.block_size,
            blocks=tuple(BlockInfo(b.block_id, b.ref_count, b.hash) for b in self.blocks),
            free_block_ids=tuple(self.free_block_ids),
            evictable_block_ids=tuple(self.evictable_block_ids),
            cached_block_ids=MappingProxyType(dict(self.cached_block_ids)),
            sequences=tuple(SequenceInfo.of(s) for s in seqs),
        )

    # --- internals ------------------------------------------------------------------------
    def _shared_partial_block(self, seq: Sequence) -> int | None:
        """The block the next token will be written into, if it is partly filled and shared."""
        if seq.num_computed_tokens % self.block_size == 0 or not seq.block_table:
            return None
        block_id = seq.block_table[seq.num_computed_tokens // self.block_size]
        return block_id if self.blocks[block_id].ref_count > 1 else None

    def _allocate(self) -> int:
        """A block with ref_count 1 from the free list, or by evicting the LRU cached block."""
        if self.free_block_ids:
            block_id = self.free_block_ids.popleft()
        elif self.evictable_block_ids:
            block_id, _ = self.evictable_block_ids.popitem(last=False)
            block = self.blocks[block_id]
            del self.cached_block_ids[block.hash]
            block.hash, block.token_ids = None, ()
            self.evictions += 1
        else:
            raise LLMInternalsError("block manager: out of KV blocks")
        self.blocks[block_id].ref_count = 1
        return block_id

    def _take(self, block_id: int) -> None:
        """One more reference to a cached block (reviving it if it was evictable)."""
        block = self.blocks[block_id]
        if block.ref_count == 0:
            del self.evictable_block_ids[block_id]
        block.ref_count += 1

    def _release(self, block_id: int) -> None:
        block = self.blocks[block_id]
        if block.ref_count <= 0:
            raise LLMInternalsError(f"block manager: block {block_id} released more than held")
        block.ref_count -= 1
        if block.ref_count == 0:
            if block.hash is not None:
                self.evictable_block_ids[block_id] = None  # most recently used: evicted last
            else:
                self.free_block_ids.append(block_id)
