"""`LLM.pool_snapshot()` against the engine's behaviour: ref counts equal the block-table uses,
every block in exactly one state, copy-on-write visible in tables, recordings and K/V, cached
hashes equal the chained-hash definition, K/V equal a plain forward, and a snapshot is a copy
that later steps leave alone."""

from __future__ import annotations

import dataclasses
import hashlib
from array import array
from collections import Counter

import pytest
import torch

from llm_internals.errors import LLMInternalsError
from llm_internals.inference.paged import LLM
from llm_internals.inference.params import SamplingParams
from llm_internals.layers.rope import apply_rope
from llm_internals.trace import recording

GREEDY = SamplingParams(temperature=0.0, max_tokens=6, ignore_eos=True)


def check_consistent(snapshot, llm) -> None:
    """Ref counts = table entries; free / evictable / held partition the pool; states agree."""
    assert {(s.request_id, s.index): list(s.block_table) for s in snapshot.sequences} == (
        llm.block_tables()
    )
    uses = Counter(b for s in snapshot.sequences for b in s.block_table)
    for block in snapshot.blocks:
        assert block.ref_count == uses[block.block_id]
        assert len(snapshot.holders(block.block_id)) == uses[block.block_id]
    free, evictable = set(snapshot.free_block_ids), set(snapshot.evictable_block_ids)
    assert len(free) + len(evictable) + len(uses) == snapshot.num_blocks
    assert {b.block_id for b in snapshot.blocks if b.state == "free"} == free
    assert {b.block_id for b in snapshot.blocks if b.state == "cached"} == evictable
    assert {b.block_id for b in snapshot.blocks if b.state == "in use"} == set(uses)
    for h, block_id in snapshot.cached_block_ids.items():
        assert snapshot.blocks[block_id].hash == h
    stats = llm.stats()
    assert (stats.blocks_free, stats.blocks_cached) == (len(free), len(evictable))


def test_ref_counts_and_states_follow_the_engine(tiny_model):
    llm = LLM(tiny_model, block_size=4, num_blocks=24, max_num_seqs=4, max_num_batched_tokens=32)
    llm.add_request("a", list(range(1, 11)), GREEDY)
    llm.add_request("b", list(range(1, 9)) + [40, 41], GREEDY)  # shares a's first two blocks
    llm.step()
    llm.add_request("c", list(range(1, 11)), GREEDY)
    for _ in range(3):
        check_consistent(llm.pool_snapshot(), llm)
        llm.step()
    snapshot = llm.pool_snapshot()
    check_consistent(snapshot, llm)
    a, c = snapshot.sequence("a"), snapshot.sequence("c")
    assert a.block_table[:2] == c.block_table[:2]  # c found a's prompt blocks in the cache
    while llm.has_unfinished():
        llm.step()
    done = llm.pool_snapshot()
    check_consistent(done, llm)
    assert done.sequences == () and all(b.ref_count == 0 for b in done.blocks)


def chained_hashes(ids: list[int], block_size: int) -> list[int]:
    """h_0 = H(0, block 0), h_i = H(h_{i-1}, block i): blake2b-64 over little-endian int64s."""
    previous, out = 0, []
    for i in range(len(ids) // block_size):
        digest = hashlib.blake2b(digest_size=8)
        digest.update(previous.to_bytes(8, "little"))
        digest.update(array("q", ids[i * block_size : (i + 1) * block_size]).tobytes())
        previous = int.from_bytes(digest.digest(), "little")
        out.append(previous)
    return out


def test_cached_hashes_are_the_chained_hashes_of_the_full_blocks(tiny_model):
    llm = LLM(tiny_model, block_size=4, num_blocks=16, max_num_seqs=2, max_num_batched_tokens=32)
    prompt = list(range(3, 14))  # 11 tokens
    llm.add_request("a", prompt, SamplingParams(temperature=0.0, max_tokens=4, ignore_eos=True))
    outputs = []
    while llm.has_unfinished():
        outputs += llm.step()
    stored = prompt + outputs[-1].token_ids[:-1]  # the last sampled token is never fed
    expected = chained_hashes(stored, 4)
    snapshot = llm.pool_snapshot()
    assert sorted(snapshot.cached_block_ids) == sorted(expected)
    assert len(snapshot.evictable_block_ids) == len(expected)
    assert {snapshot.blocks[b].hash for b in snapshot.evictable_block_ids} == set(expected)


def test_copy_on_write_shows_in_tables_recordings_and_kv(tiny_model):
    llm = LLM(tiny_model, block_size=4, num_blocks=20, max_num_seqs=4, max_num_batched_tokens=32)
    params = SamplingParams(temperature=1.0, seed=3, n=3, max_tokens=4, ignore_eos=True)
    llm.add_request("p", [5, 6, 7, 8, 9, 10], params)  # 6 tokens: one full block + 2 slots
    llm.step()
    forked = llm.pool_snapshot()
    check_consistent(forked, llm)
    tables = [s.block_table for s in forked.samples("p")]
    assert len(tables) == 3 and len(set(tables)) == 1
    assert [forked.blocks[b].ref_count for b in tables[0]] == [3, 3]
    shared_partial = tables[0][1]
    before = llm.pool_snapshot(kv_block_ids=[shared_partial])
    with recording() as rec:
        llm.step()
    after = llm.pool_snapshot()
    check_consistent(after, llm)
    copies = [pair for pairs in rec.all("paged.block_copies") for pair in pairs]
    new_tables = [s.block_table for s in after.samples("p")]
    assert all(t[0] == tables[0][0] for t in new_tables)  # the full block stays shared
    assert after.blocks[tables[0][0]].ref_count == 3
    destinations = [d for _, d in copies]
    assert all(s == shared_partial for s, _ in copies) and len(copies) == 2
    assert sorted(t[1] for t in new_tables) == sorted([*destinations, shared_partial])
    assert all(after.blocks[t[1]].ref_count == 1 for t in new_tables)
    # the copies hold the two prompt positions the source held before the step
    copied = llm.pool_snapshot(kv_block_ids=destinations)
    for i in range(len(destinations)):
        for got, want in ((copied.keys, before.keys), (copied.values, before.values)):
            torch.testing.assert_close(got[:, :, i * 4 : i * 4 + 2], want[:, :, :2], rtol=0, atol=0)


def test_kv_of_a_block_table_equals_a_plain_forward(tiny_model):
    llm = LLM(tiny_model, block_size=4, num_blocks=20, max_num_seqs=2, max_num_batched_tokens=32)
    llm.add_request("a", [3, 1, 4, 1, 5, 9, 2, 6, 5], GREEDY)
    llm.step()
    llm.step()
    seq = llm.pool_snapshot().sequence("a")
    snapshot = llm.pool_snapshot(kv_block_ids=seq.block_table)
    assert snapshot.kv_block_ids == seq.block_table
    n = seq.num_computed_tokens
    ids = torch.tensor(seq.token_ids[:n])[None]
    attn = tiny_model.blocks[0].attn
    with torch.no_grad():
        x = tiny_model.blocks[0].norm1(tiny_model.tok_emb(ids))
        k = attn.k_proj(x).view(1, n, attn.n_kv_heads, attn.head_dim).transpose(1, 2)
        v = attn.v_proj(x).view(1, n, attn.n_kv_heads, attn.head_dim).transpose(1, 2)
        cos, sin = tiny_model.rope(torch.arange(n)[None], dtype=x.dtype)
        k = apply_rope(attn.k_norm(k) if attn.k_norm else k, cos, sin, attn.rope_layout)
    torch.testing.assert_close(snapshot.keys[0, :, :n], k[0], rtol=0, atol=1e-12)
    torch.testing.assert_close(snapshot.values[0, :, :n], v[0], rtol=0, atol=1e-12)
    c = tiny_model.config
    assert snapshot.keys.shape == (c.n_layers, c.n_kv_heads, len(seq.block_table) * 4, c.head_dim)


def test_a_snapshot_is_a_frozen_copy(tiny_model):
    llm = LLM(tiny_model, block_size=4, num_blocks=20, max_num_seqs=2, max_num_batched_tokens=32)
    llm.add_request("a", [1, 2, 3, 4, 5], GREEDY)
    llm.step()
    snapshot = llm.pool_snapshot(kv_block_ids=[0, 1])
    tables, keys = snapshot.sequence("a").block_table, snapshot.keys.clone()
    free = list(snapshot.free_block_ids)
    for _ in range(4):
        llm.step()
    assert snapshot.sequence("a").block_table == tables and list(snapshot.free_block_ids) == free
    assert torch.equal(snapshot.keys, keys)  # later writes to the pool do not show
    assert llm.pool_snapshot().sequence("a").block_table != tables  # the engine did move on
    with pytest.raises(dataclasses.FrozenInstanceError):
        snapshot.block_size = 8
    with pytest.raises(TypeError):
        snapshot.cached_block_ids[1] = 2
    with pytest.raises(LLMInternalsError, match="no unfinished sample b#0; unfinished: a#0"):
        snapshot.sequence("b")
    with pytest.raises(LLMInternalsError, match="outside 0..19"):
        llm.pool_snapshot(kv_block_ids=[20])


def test_runner_records_row_owners_and_sample_rows(tiny_model):
    llm = LLM(tiny_model, block_size=4, num_blocks=30, max_num_seqs=4, max_num_batched_tokens=12)
    llm.add_request("a", [3, 1, 4], GREEDY)
    llm.step()
    llm.add_request("b", list(range(20, 25)), GREEDY)
    with recording() as rec:
        llm.step()
    assert rec.get("paged.row_sequences") == [("a", 0)] + [("b", 0)] * 5
    assert rec.get("paged.sample_rows") == [0, 5]  # a's decode, b's last prompt token
    assert rec.get("paged.block_copies") == []
