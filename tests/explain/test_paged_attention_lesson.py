"""The paged-attention lesson's numbers, recomputed independently: reservations and first-fit
gaps by arithmetic, block tables against ceil(tokens / block_size), reference counts by counting
table entries, slots by the translation formula, keys by hand from the weights, greedy tokens by
full forwards, the measured waste from the closed-form timeline of the workload, block hashes
from the chained-hash definition."""

from __future__ import annotations

import hashlib
import math
import random
from array import array

import pytest
import torch

from llm_internals.explain.lesson import Table
from llm_internals.explain.lessons import paged_attention as lesson_module
from llm_internals.explain.paged_workload import WORKLOAD_SEED
from llm_internals.explain.registry import get_lesson, list_lessons
from llm_internals.tokenizer.char import CharTokenizer

BS = lesson_module.BLOCK_SIZE
GPT2 = {"layers": 12, "heads": 12, "d_model": 768}  # openai-community/gpt2 config.json


@pytest.fixture(scope="module")
def lesson():
    return {s.title: s.steps for s in lesson_module.build().sections}


@pytest.fixture(scope="module")
def tiny():
    tok = CharTokenizer(lesson_module.ALPHABET)
    return lesson_module.tiny_model(tok.vocab_size), tok


def greedy_by_full_forwards(model, ids: list[int], n: int) -> list[int]:
    out = []
    with torch.no_grad():
        for _ in range(n):
            out.append(int(model(torch.tensor([ids + out]))[0, -1].argmax()))
    return out


def layer0_keys_head0(model, ids: list[int]) -> torch.Tensor:
    """Embedding -> RMSNorm -> k_proj -> RoPE (rotate-half), head 0 of layer 0."""
    block, c = model.blocks[0], model.config
    x = model.tok_emb.weight[torch.tensor(ids)]
    x = x / torch.sqrt((x * x).mean(-1, keepdim=True) + c.norm_eps) * block.norm1.weight
    k = (x @ block.attn.k_proj.weight.T)[:, : c.head_dim]
    inv_freq = 1.0 / (c.rope_theta ** (torch.arange(0, c.head_dim, 2).float() / c.head_dim))
    angles = torch.arange(len(ids)).float()[:, None] * inv_freq[None, :]
    cos, sin = torch.cat([angles.cos()] * 2, -1), torch.cat([angles.sin()] * 2, -1)
    half = c.head_dim // 2
    return k * cos + torch.cat([-k[:, half:], k[:, :half]], -1) * sin


def rows(table: Table) -> list[list]:
    assert isinstance(table, Table)
    return table.rows


def test_registered_and_listed():
    assert "paged-attention" in [info.name for info in list_lessons()]
    assert get_lesson("paged-attention").title == lesson_module.INFO.title


def test_recap_bytes_per_token(lesson, tiny):
    model, _ = tiny
    c = model.config
    values = lesson["Recap: the KV cache"][0].values
    assert (
        values["this lesson's tiny model (bytes/token)"]
        == 2 * c.n_layers * c.n_kv_heads * (c.d_model // c.n_heads) * 4
    )
    head_dim = GPT2["d_model"] // GPT2["heads"]
    assert (
        values["GPT-2, float32 (bytes/token)"] == 2 * GPT2["layers"] * GPT2["heads"] * head_dim * 4
    )


def workload() -> list[tuple[int, int]]:
    rng = random.Random(WORKLOAD_SEED)
    lo, hi = lesson_module.PROMPT_RANGE, lesson_module.OUTPUT_RANGE
    return [(rng.randint(*lo), rng.randint(*hi)) for _ in range(lesson_module.WORKLOAD_SIZE)]


def test_problem_reservation_arithmetic(lesson):
    cap, snap = lesson_module.MAX_TOKENS_CAP, lesson_module.SNAPSHOT
    step = lesson["The problem: reserved memory that holds nothing"][0]
    expected = [[i, p, o, p + cap, p + snap, o - snap, cap - o]
                for i, (p, o) in enumerate(workload()) if o > snap]  # fmt: skip
    assert rows(step.values["requests at the snapshot"]) == expected
    reserved = sum(r[3] for r in expected)
    held = sum(r[4] for r in expected)
    assert math.isclose(step.values["share of reserved slots holding K/V"], held / reserved)
    assert math.isclose(
        step.values["share reserved for later"], sum(r[5] for r in expected) / reserved
    )
    assert math.isclose(step.values["share never used"], sum(r[6] for r in expected) / reserved)
    per_token = 2 * 12 * 768 * 4
    assert math.isclose(step.values["reserved MiB (GPT-2, float32)"], reserved * per_token / 2**20)
    whole = step.values["reserving the whole context instead: share holding K/V"]
    assert math.isclose(whole, held / (len(expected) * 1024))


def test_external_fragmentation_gaps(lesson):
    sizes = [p + lesson_module.MAX_TOKENS_CAP for p, _ in workload()]
    pool = lesson_module.POOL_SLOTS
    placed, offset = [], 0
    for i, size in enumerate(sizes):
        if offset + size > pool:
            break
        placed.append([i, offset, size])
        offset += size
    outputs = dict(enumerate(o for _, o in workload()))
    done = sorted(placed, key=lambda r: outputs[r[0]])[:2]
    free = [False] * pool
    for _, start, size in done:
        free[start : start + size] = [True] * size
    free[offset:] = [True] * (pool - offset)
    gaps, start = [], None
    for slot, is_free in enumerate([*free, False]):
        if is_free and start is None:
            start = slot
        elif not is_free and start is not None:
            gaps.append([start, slot - start])
            start = None
    step = lesson["The problem: reserved memory that holds nothing"][1]
    assert rows(step.values["contiguous reservations"]) == placed
    assert rows(step.values["free gaps after two finish"]) == gaps
    need = sizes[len(placed)]
    assert step.values[f"request {len(placed)} needs"] == need
    assert step.values["free slots in total"] == sum(g[1] for g in gaps) >= need
    assert step.values["largest gap"] == max(g[1] for g in gaps) < need


def test_block_tables_pool_and_packed_step(lesson, tiny):
    model, tok = tiny
    steps = lesson["How it works: block tables and the physical pool"]
    tables = {}
    for request, text, stored, table in rows(steps[0].values["block tables after step 2"]):
        prompt = tok.encode(request)
        expected = prompt + greedy_by_full_forwards(model, prompt, 2)
        assert text == repr(tok.decode(expected))
        assert stored == len(expected) - 1  # the newest token is fed at the next step
        blocks = [int(b) for b in table.strip("[]").split(",")]
        assert len(blocks) == -(-stored // BS)
        tables[request] = (blocks, expected, stored)
    all_blocks = [b for blocks, _, _ in tables.values() for b in blocks]
    assert len(all_blocks) == len(set(all_blocks))  # no sharing without n > 1 or prefixes
    pool = rows(steps[0].values["physical pool"])
    assert [r[0] for r in pool] == list(range(lesson_module.NUM_BLOCKS))
    for block, state, refs, held_by, filled, text in pool:
        owners = [r for r, (blocks, _, _) in tables.items() if block in blocks]
        assert refs == len(owners) and held_by == ", ".join(owners)
        assert state == ("in use" if owners else "free")
        if owners:
            blocks, ids, stored = tables[owners[0]]
            i = blocks.index(block)
            held = ids[i * BS : min((i + 1) * BS, stored)]
            assert filled == len(held) and text == repr(tok.decode(held))
        else:
            assert filled == 0 and text == "''"
    packed = rows(steps[1].values["packed step"])
    assert sorted(r[0] for r in packed) == sorted(p for p, _ in lesson_module.REQUESTS)
    for request, token, position, slot in packed:
        blocks, ids, stored = tables[request]
        assert position == stored - 1 and token == repr(tok.decode([ids[position]]))
        assert slot == blocks[position // BS] * BS + position % BS
    first, _ = lesson_module.REQUESTS[0]
    _, ids, stored = tables[first]
    with torch.no_grad():
        expected_keys = layer0_keys_head0(model, ids[:stored])
    shown = steps[2].values["gathered keys (positions x head_dim)"]
    assert torch.allclose(shown, expected_keys, atol=1e-6)
    assert steps[2].values["same tokens as contiguous generate"] is True


def test_measured_waste_matches_the_closed_form_timeline(lesson):
    """All prompts fit one step's budget, so after step t request i (if o_i > t) stores
    p_i + t - 1 tokens in ceil((p_i + t - 1) / bs) blocks."""
    bs = lesson_module.MEASURED_BLOCK_SIZE
    timeline = {}
    for t in range(1, max(o for _, o in workload())):
        running = [(p, o) for p, o in workload() if o > t]
        used = sum(p + t - 1 for p, _ in running)
        blocks = sum(-(-(p + t - 1) // bs) for p, _ in running)
        timeline[t] = (len(running), used, blocks, blocks * bs, 1 - used / (blocks * bs))
    step = lesson["Why it is so effective: the measured waste"][0]
    shown = rows(step.values[f"sampled every {lesson_module.SAMPLE_EVERY} steps"])
    assert [r[0] for r in shown] == list(range(1, len(timeline) + 1, lesson_module.SAMPLE_EVERY))
    for t, running, used, blocks, allocated, waste in shown:
        assert (running, used, blocks, allocated) == timeline[t][:4]
        assert math.isclose(waste, timeline[t][4])
        assert allocated - used < running * bs
    wastes = [w for *_, w in timeline.values()]
    assert step.values["steps"] == len(timeline)
    assert math.isclose(step.values["mean waste over all steps"], sum(wastes) / len(wastes))
    assert math.isclose(step.values["peak waste"], max(wastes))
    assert max(wastes) < 0.04


def _refs(tables: list[list[int]]) -> dict[int, int]:
    counts: dict[int, int] = {}
    for table in tables:
        for block in table:
            counts[block] = counts.get(block, 0) + 1
    return counts


def _parse(table: str) -> list[int]:
    return [int(b) for b in table.strip("[]").split(",")]


def test_parallel_sampling_shares_then_copies_on_write(lesson):
    fork, cow = lesson["Memory sharing across requests"][:2]
    n, prompt = lesson_module.N_SAMPLES, lesson_module.SHARED_PROMPT
    before = rows(fork.values["after step 1 (prefill, fork)"])
    assert [r[0] for r in before] == list(range(n))
    assert all(r[1].startswith(repr(prompt)[:-1]) and r[2] == len(prompt) for r in before)
    tables = [_parse(r[3]) for r in before]
    assert all(t == tables[0] for t in tables) and len(tables[0]) == -(-len(prompt) // BS)
    refs = _refs(tables)
    assert [[b, c] for b, c, _ in rows(fork.values["reference counts after step 1"])] == [
        [b, refs[b]] for b in sorted(refs)
    ]
    assert set(refs.values()) == {n}
    after = rows(cow.values["after step 2"])
    new_tables = [_parse(r[3]) for r in after]
    assert all(r[2] == len(prompt) + 1 for r in after)
    shared_full, partial = tables[0][:-1], tables[0][-1]
    assert all(t[:-1] == shared_full for t in new_tables)
    copies = rows(cow.values["copy-on-write copies (source, destination)"])
    assert copies == [[partial, t[-1]] for t in new_tables[:-1]]  # the last holder keeps it
    assert new_tables[-1][-1] == partial
    refs = _refs(new_tables)
    assert [[b, c] for b, c, _ in rows(cow.values["reference counts after step 2"])] == [
        [b, refs[b]] for b in sorted(refs)
    ]
    assert cow.values["blocks held by the tables"] == sum(len(t) for t in new_tables)
    assert cow.values["distinct physical blocks"] == len(refs)


def chained_hashes(ids: list[int], bs: int) -> list[int]:
    previous, out = 0, []
    for i in range(len(ids) // bs):
        digest = hashlib.blake2b(digest_size=8)
        digest.update(previous.to_bytes(8, "little"))
        digest.update(array("q", ids[i * bs : (i + 1) * bs]).tobytes())
        previous = int.from_bytes(digest.digest(), "little")
        out.append(previous)
    return out


def test_shared_prefix_hits_refcounts_and_hashes(lesson, tiny):
    model, tok = tiny
    during, after = lesson["Memory sharing across requests"][2:]
    first, second = lesson_module.PREFIX_PROMPTS
    common = next(i for i, (a, b) in enumerate(zip(first, second, strict=True)) if a != b)
    hit_blocks = common // BS
    tables = {r: _parse(t) for r, t in rows(during.values["block tables while both run"])}
    assert tables[second][:hit_blocks] == tables[first][:hit_blocks]
    assert not set(tables[second][hit_blocks:]) & set(tables[first])
    refs = _refs(list(tables.values()))
    assert [[b, c] for b, c, _ in rows(during.values["reference counts"])] == [
        [b, refs[b]] for b in sorted(refs)
    ]
    queried = len(first) + len(second)
    assert during.values["prompt tokens looked up"] == queried
    assert during.values["prompt tokens found in the cache"] == hit_blocks * BS
    assert math.isclose(during.values["hit rate"], hit_blocks * BS / queried)
    # after step 2 the first request has fed its prompt and one sampled token
    ids = tok.encode(first)
    ids += greedy_by_full_forwards(model, ids, 2)
    computed = len(tok.encode(first)) + 1
    hashes = chained_hashes(ids[:computed], BS)
    shown = rows(during.values[f"hashes of {first!r}'s blocks"])
    assert [b for b, _ in shown] == tables[first]
    assert [h for _, h in shown] == [f"{h:016x}" for h in hashes] + ["-"] * (
        len(shown) - len(hashes)
    )
    # at the end: every distinct full block of either sequence stays cached, the rest is free
    full = set()
    for prompt in (first, second):
        seq = tok.encode(prompt)
        seq += greedy_by_full_forwards(model, seq, 3)
        stored = seq[:-1]  # the last sampled token is never fed
        full |= set(chained_hashes(stored, BS))
    assert after.values["blocks cached"] == len(full)
    assert after.values["blocks in use"] == 0
    assert after.values["blocks free"] == lesson_module.NUM_BLOCKS - len(full)
