"""BlockManager on hand-made sequences: allocation, ref counts, copy-on-write, the chained prefix
hash, LRU eviction of unreferenced cached blocks."""

from __future__ import annotations

import hashlib

import pytest

from llm_internals.errors import LLMInternalsError
from llm_internals.inference.paged import BlockManager, Sequence, block_hash
from llm_internals.inference.params import SamplingParams


def seq(tokens, order=0) -> Sequence:
    return Sequence("r", list(tokens), SamplingParams(), arrival_order=order)


def grow(manager: BlockManager, s: Sequence, n: int) -> list[tuple[int, int]]:
    """What a step does: reserve room, 'compute' n tokens, register full blocks."""
    copies = manager.reserve(s, n)
    s.num_computed_tokens += n
    manager.register_full_blocks(s)
    return copies


def test_allocate_append_free():
    manager = BlockManager(num_blocks=6, block_size=4, enable_prefix_caching=False)
    s = seq(range(10))
    assert manager.blocks_needed(s, 10) == 3
    grow(manager, s, 10)
    assert len(s.block_table) == 3 and manager.num_available_blocks == 3
    assert [manager.blocks[b].ref_count for b in s.block_table] == [1, 1, 1]
    s.token_ids.append(3)
    assert manager.blocks_needed(s, 1) == 0  # position 10 fits in the third block
    grow(manager, s, 1)
    s.token_ids += [4, 5]
    assert manager.blocks_needed(s, 2) == 1  # positions 11 and 12: 12 opens a fourth block
    grow(manager, s, 2)
    manager.free(s)
    assert manager.num_available_blocks == 6 and sorted(manager.free_block_ids) == list(range(6))
    assert all(b.ref_count == 0 and b.hash is None for b in manager.blocks)


def test_reserve_beyond_the_pool_raises_and_changes_nothing():
    manager = BlockManager(num_blocks=2, block_size=4)
    s = seq(range(9))
    with pytest.raises(LLMInternalsError, match="needs more blocks"):
        manager.reserve(s, 9)
    assert manager.num_available_blocks == 2 and s.block_table == []


def test_hash_is_chained_over_the_whole_prefix():
    h0 = block_hash(0, [1, 2, 3, 4])
    expected = hashlib.blake2b((0).to_bytes(8, "little") + b"".join(
        t.to_bytes(8, "little", signed=True) for t in (1, 2, 3, 4)), digest_size=8)  # fmt: skip
    assert h0 == int.from_bytes(expected.digest(), "little")
    # the same four tokens after a different first block get a different hash
    assert block_hash(h0, [5, 6, 7, 8]) != block_hash(block_hash(0, [9, 9, 9, 9]), [5, 6, 7, 8])
    assert block_hash(h0, [5, 6, 7, 8]) == block_hash(block_hash(0, [1, 2, 3, 4]), [5, 6, 7, 8])


def test_prefix_hits_share_blocks_and_leave_one_token_to_compute():
    manager = BlockManager(num_blocks=8, block_size=4)
    a = seq([1, 2, 3, 4, 5, 6, 7, 8, 9])
    manager.admit(a, manager.match_prefix(a))
    grow(manager, a, 9)
    b = seq([1, 2, 3, 4, 5, 6, 7, 8, 10, 11], order=1)  # same first two blocks
    hits = manager.match_prefix(b)
    assert hits == a.block_table[:2]
    manager.admit(b, hits)
    assert b.num_computed_tokens == 8
    assert [manager.blocks[x].ref_count for x in hits] == [2, 2]
    c = seq([1, 2, 3, 4, 5, 6, 7, 8], order=2)  # the whole prompt is cached: recompute the last
    assert manager.match_prefix(c) == a.block_table[:1]
    d = seq([9, 2, 3, 4, 5, 6, 7, 8, 9], order=3)  # second block equal, first not: no hit
    assert manager.match_prefix(d) == []
    assert manager.prefix_queried_tokens == 19 and manager.prefix_hit_tokens == 8


def test_freed_full_blocks_stay_cached_and_are_evicted_lru():
    manager = BlockManager(num_blocks=4, block_size=2)
    a, b = seq([1, 2, 3, 4]), seq([5, 6, 7], order=1)
    for s in (a, b):
        manager.admit(s, [])
        grow(manager, s, s.num_tokens)
    a_blocks, b_blocks = list(a.block_table), list(b.block_table)
    manager.free(a)  # both of a's blocks are full: cached, tail first in LRU order
    assert list(manager.evictable_block_ids) == [a_blocks[1], a_blocks[0]]
    manager.free(b)  # b's first block is full (cached), its second partial (free)
    assert list(manager.free_block_ids) == [b_blocks[1]]
    assert list(manager.evictable_block_ids) == [a_blocks[1], a_blocks[0], b_blocks[0]]
    c = seq([8, 9, 10, 11, 12], order=2)
    manager.admit(c, manager.match_prefix(c))
    grow(manager, c, 5)  # 3 blocks: the free one, then the two least recently used cached
    assert c.block_table == [b_blocks[1], a_blocks[1], a_blocks[0]]
    assert manager.evictions == 2
    again = seq([1, 2, 3, 4, 5], order=3)
    assert manager.match_prefix(again) == []  # a's prefix was evicted
    revived = seq([5, 6, 0], order=4)
    assert manager.match_prefix(revived) == [b_blocks[0]]
    manager.admit(revived, [b_blocks[0]])
    assert b_blocks[0] not in manager.evictable_block_ids
    assert manager.blocks[b_blocks[0]].ref_count == 1


def test_fork_shares_blocks_and_copy_on_write_splits_the_partial_block():
    manager = BlockManager(num_blocks=8, block_size=4)
    parent = seq([1, 2, 3, 4, 5, 6])
    manager.admit(parent, [])
    grow(manager, parent, 6)
    child = parent.fork(1)
    manager.fork(parent, child)
    assert child.block_table == parent.block_table
    assert [manager.blocks[b].ref_count for b in parent.block_table] == [2, 2]
    shared_full, shared_partial = parent.block_table
    child.token_ids.append(7)
    assert manager.blocks_needed(child, 1) == 1  # the copy
    copies = grow(manager, child, 1)
    assert copies == [(shared_partial, child.block_table[1])]
    assert child.block_table[0] == shared_full and child.block_table[1] != shared_partial
    assert manager.blocks[shared_partial].ref_count == 1
    parent.token_ids.append(8)
    assert manager.blocks_needed(parent, 1) == 0  # now the only holder: writes in place
    assert grow(manager, parent, 1) == []
    manager.free(parent)
    manager.free(child)
    assert all(b.ref_count == 0 for b in manager.blocks)
    assert manager.num_available_blocks == 8
