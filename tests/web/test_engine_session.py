"""The Engine view's session (web/engine_session.py) against a test engine given the same
requests: block tables, pool states and counters equal the engine's own at every step; events
(admitted, preempted, finished) match what the engine did; limits and a failed step are clean."""

from __future__ import annotations

import pytest

from llm_internals.errors import LLMInternalsError
from llm_internals.explain.tiny_models import tiny_decoder, tiny_tokenizer
from llm_internals.web.engine_session import (
    EngineLimits,
    EngineSession,
    EngineSettings,
    make_engine,
    request_params,
)

# r2 repeats r1's first 8 tokens (two blocks of 4: prefix-cache hits); the four requests grow
# to 23, 23, 25 and 21 tokens (6 or 7 blocks each), more than 12 blocks: the newest are preempted.
SCRIPT = [("the cat sat", 12), ("the cat ran", 12), ("dogs bark", 16), ("birds", 16)]
SETTINGS = EngineSettings(block_size=4, num_blocks=12, max_num_seqs=4, max_num_batched_tokens=16)


def new_session() -> EngineSession:
    return EngineSession(tiny_decoder(0), tiny_tokenizer(), SETTINGS)


def check_step(session: EngineSession, reference, seen: dict[str, set]) -> None:
    """Step both; the session's view must show what the reference engine holds and did."""
    preemptions = reference.stats().preemptions
    before = {k for k, v in reference.block_tables().items() if v}
    session.step()
    outputs = reference.step()
    view = session.view()
    tables = {(s["request"], s["index"]): s["block_table"] for s in view["sequences"]}
    assert tables == reference.block_tables()
    snapshot = reference.pool_snapshot()
    assert [b["ref_count"] for b in view["pool"]] == [b.ref_count for b in snapshot.blocks]
    assert [b["state"] for b in view["pool"]] == [b.state for b in snapshot.blocks]
    stats = reference.stats()
    assert view["counters"]["prefix_hit_tokens"] == stats.prefix_cache_hit_tokens
    assert view["counters"]["preemptions"] == stats.preemptions
    per_slot = reference.cache.nbytes() // (SETTINGS.num_blocks * SETTINGS.block_size)
    assert view["memory"]["used_bytes"] == stats.kv_slots_used * per_slot
    assert view["memory"]["allocated_bytes"] == stats.blocks_used * SETTINGS.block_size * per_slot
    after = {k for k, v in reference.block_tables().items() if v}
    events = {kind: {e["request"] for e in view["events"] if e["kind"] == kind} for kind in seen}
    assert events["preempted"] == {k[0] for k in before - after} - {
        o.request_id for o in outputs if o.request_finished
    }
    assert bool(events["preempted"]) == (stats.preemptions > preemptions)
    assert events["admitted"] | events["forked"] == {k[0] for k in after - before}
    assert events["finished"] == {o.request_id for o in outputs if o.request_finished}
    for kind in seen:
        seen[kind] |= events[kind]


def test_views_equal_the_engine_at_every_step():
    session, tokenizer = new_session(), tiny_tokenizer()
    reference = make_engine(tiny_decoder(0), tokenizer, SETTINGS)
    seen: dict[str, set] = {"admitted": set(), "forked": set(), "preempted": set(),
                            "finished": set()}  # fmt: skip
    for i, (prompt, max_tokens) in enumerate(SCRIPT):
        assert session.add_request(prompt, max_tokens) == f"r{i + 1}"
        reference.add_request(f"r{i + 1}", tokenizer.encode(prompt), request_params(max_tokens))
        check_step(session, reference, seen)
    while session.view()["has_unfinished"]:
        check_step(session, reference, seen)
    assert not reference.has_unfinished()
    assert seen["finished"] == seen["admitted"] == {"r1", "r2", "r3", "r4"}
    assert seen["preempted"], "the script should overflow the pool"
    view = session.view()
    assert view["counters"]["prefix_hit_tokens"] >= 8  # r2 found r1's first two blocks
    expected = make_engine(tiny_decoder(0), tokenizer, SETTINGS).generate(
        [tokenizer.encode(p) for p, _ in SCRIPT], [request_params(n) for _, n in SCRIPT]
    )
    assert [r["outputs"] for r in view["requests"]] == [[o.token_ids] for o in expected]
    assert [r["status"] for r in view["requests"]] == ["finished"] * 4


def test_shared_prefix_blocks_show_both_holders():
    session = new_session()
    session.add_request("the cat sat on a mat", 4)
    session.step()  # 16 tokens computed (the step's budget): four full blocks, now cached
    session.add_request("the cat sat on a rug", 4)  # the same first 17 characters
    session.step()
    view = session.view()
    shared = [b for b in view["pool"] if b["shared"]]
    assert len(shared) == 4
    assert all(b["holders"] == ["r1#0", "r2#0"] and b["cached"] for b in shared)
    r1, r2 = view["sequences"]
    assert r1["block_table"][:4] == r2["block_table"][:4] == [b["id"] for b in shared]
    assert r1["block_table"][4] != r2["block_table"][4]
    assert view["counters"]["prefix_hit_tokens"] == 16


def test_parallel_samples_fork_share_and_copy_on_write():
    session, tokenizer = new_session(), tiny_tokenizer()
    reference = make_engine(tiny_decoder(0), tokenizer, SETTINGS)
    session.add_request("the cat sat", 3, n=2)  # 11 tokens: blocks of 4, 4 and 3
    reference.add_request("r1", tokenizer.encode("the cat sat"), request_params(3, 2))
    seen: dict[str, set] = {"admitted": set(), "forked": set(), "preempted": set(),
                            "finished": set()}  # fmt: skip
    check_step(session, reference, seen)  # prefill, first token, fork
    view = session.view()
    assert [e["kind"] for e in view["events"]] == ["admitted", "forked"]
    first, second = view["sequences"]
    assert first["block_table"] == second["block_table"]  # the fork shares every block
    assert [b["ref_count"] for b in view["pool"] if b["ref_count"]] == [2, 2, 2]
    check_step(session, reference, seen)  # each writes its token into the shared last block
    first, second = session.view()["sequences"]
    assert first["block_table"][:2] == second["block_table"][:2]
    assert first["block_table"][2] != second["block_table"][2]  # copied on write
    while session.view()["has_unfinished"]:
        check_step(session, reference, seen)
    outputs = session.view()["requests"][0]["outputs"]
    assert len(outputs) == 2 and outputs[0] == outputs[1] and len(outputs[0]) == 3  # greedy


def test_limits_give_clear_errors():
    limits = EngineLimits(max_requests=1, max_steps=1, max_new_tokens=4, max_prompt_tokens=5)
    session = EngineSession(tiny_decoder(0), tiny_tokenizer(), SETTINGS, limits)
    with pytest.raises(LLMInternalsError, match=r"max_tokens must be an integer in \[1, 4\]"):
        session.add_request("abc", 5)
    with pytest.raises(LLMInternalsError, match=r"n must be an integer in \[1, 4\], got 5"):
        session.add_request("abc", 2, n=5)
    with pytest.raises(LLMInternalsError, match="1 to 5"):
        session.add_request("abcdef", 2)
    with pytest.raises(LLMInternalsError, match="nothing to run"):
        session.step()
    session.add_request("abc", 4)
    with pytest.raises(LLMInternalsError, match="limit is 1"):
        session.add_request("abc", 4)
    session.step()
    with pytest.raises(LLMInternalsError, match="run 1 steps"):
        session.step()
    with pytest.raises(LLMInternalsError, match=r"num_blocks must be an integer in \[1, 64\]"):
        EngineSession(tiny_decoder(0), tiny_tokenizer(), EngineSettings(num_blocks=65))


def test_a_request_that_can_never_fit_changes_nothing():
    small = EngineSettings(block_size=2, num_blocks=3, max_num_seqs=2, max_num_batched_tokens=4)
    session = EngineSession(tiny_decoder(0), tiny_tokenizer(), small)
    with pytest.raises(LLMInternalsError, match="need 6 KV blocks, but the whole pool has 3"):
        session.add_request("abcdefgh", 4)
    with pytest.raises(LLMInternalsError, match="n=3 samples exceed max_num_seqs=2"):
        session.add_request("ab", 4, n=3)
    assert session.view()["requests"] == [] and session.view()["counters"]["blocks_free"] == 3
    assert session.add_request("ab", 2) == "r1"


def test_a_failed_step_frees_every_block():
    session = new_session()
    session.add_request("the cat sat on a mat", 8)
    session.add_request("dogs bark", 8)
    session.step()
    assert session.view()["counters"]["blocks_used"] > 0

    def broken(batch):
        raise RuntimeError("planted failure")

    session.engine.runner.execute = broken
    with pytest.raises(LLMInternalsError, match="planted failure.*blocks freed"):
        session.step()
    view = session.view()
    assert all(b["ref_count"] == 0 for b in view["pool"])
    assert view["counters"]["blocks_used"] == 0
    assert [r["status"] for r in view["requests"]] == ["failed", "failed"]
    assert "planted failure" in view["error"]
