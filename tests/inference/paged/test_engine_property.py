"""A hypothesis property test: random add / step / abort sequences on a tiny model and a tiny
pool. After every action the block invariants hold; at the end every block is free or cached;
every greedy sample that finished equals the contiguous-cache `generate` output."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llm_internals.errors import LLMInternalsError
from llm_internals.inference.paged import LLM
from llm_internals.inference.paged.block_manager import ROOT_HASH, block_hash
from llm_internals.inference.params import SamplingParams

PREFIXES = ([1, 2, 3, 4, 5, 6, 7, 8], [1, 2, 3, 4, 9, 9], [20, 21, 22], [])

add_action = st.tuples(
    st.just("add"),
    st.sampled_from(range(len(PREFIXES))),
    st.lists(st.integers(0, 47), min_size=1, max_size=14),
    st.integers(1, 12),  # max_tokens
    st.sampled_from([1, 1, 1, 2, 3]),  # n
)
actions = st.lists(
    st.one_of(add_action, st.just(("step",)), st.tuples(st.just("abort"), st.integers(0, 30))),
    min_size=1,
    max_size=40,
)


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    actions=actions,
    num_blocks=st.integers(6, 14),
    block_size=st.sampled_from([2, 4]),
    budget=st.sampled_from([4, 7, 32]),
    prefix_caching=st.booleans(),
)
def test_random_add_step_abort_keeps_the_block_invariants(
    tiny_model, invariants, greedy_reference, actions, num_blocks, block_size, budget,
    prefix_caching,
):  # fmt: skip
    llm = LLM(tiny_model, block_size=block_size, num_blocks=num_blocks, max_num_seqs=3,
              max_num_batched_tokens=budget, enable_prefix_caching=prefix_caching)  # fmt: skip
    requests = {}  # id -> (prompt, max_tokens, n)
    finished = {}
    aborted = set()

    def collect(outputs):
        for out in outputs:
            if out.finished and out.finish_reason != "abort":
                finished[(out.request_id, out.index)] = out.token_ids

    for action in actions:
        if action[0] == "add":
            _, prefix, tail, max_tokens, n = action
            prompt = PREFIXES[prefix] + tail
            request_id = f"r{len(requests)}"
            params = SamplingParams(temperature=0.0, max_tokens=max_tokens, n=n)
            try:
                llm.add_request(request_id, prompt, params)
            except LLMInternalsError as err:  # only a request that can never fit is refused
                assert "whole pool" in str(err)
                assert -(-min(len(prompt) + max_tokens - 1, 64) // block_size) > num_blocks
                continue
            requests[request_id] = (prompt, max_tokens, n)
        elif action[0] == "step":
            collect(llm.step())
        else:
            request_id = f"r{action[1]}"
            llm.abort(request_id)
            if request_id in requests:
                aborted.add(request_id)
        invariants(llm)

    for _ in range(2000):
        if not llm.has_unfinished():
            break
        collect(llm.step())
        invariants(llm)
    assert not llm.has_unfinished(), "the engine did not drain"
    manager = llm.block_manager
    assert all(block.ref_count == 0 for block in manager.blocks)
    assert len(manager.free_block_ids) + len(manager.evictable_block_ids) == num_blocks
    for request_id, (prompt, max_tokens, n) in requests.items():
        expected = greedy_reference(tiny_model, prompt, max_tokens)
        for index in range(n):
            if (request_id, index) in finished:
                assert finished[(request_id, index)] == expected, (request_id, index)
            else:
                assert request_id in aborted, f"{request_id} sample {index} never finished"


DRAFTS = {"target": None, "random": 7}  # draft model seeds (None: the target itself)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    actions=actions,
    num_blocks=st.integers(6, 14),
    block_size=st.sampled_from([2, 4]),
    budget=st.sampled_from([4, 7, 32]),
    prefix_caching=st.booleans(),
    draft=st.sampled_from(["random", "target", "ngram"]),
    gamma=st.integers(1, 4),
)
def test_speculation_leaks_no_block_and_caches_no_rejected_token(
    tiny_model, invariants, greedy_reference, model_factory, actions, num_blocks, block_size,
    budget, prefix_caching, draft, gamma,
):  # fmt: skip
    """The same random mixes with speculative decoding (n = 1: n > 1 is refused with a draft):
    block invariants after every action, every block free or cached at the end (in the draft's
    pool too), greedy outputs equal `generate`, and every block ever entered in the prefix cache
    holds tokens of a greedy output: a block with a rejected draft token would not."""
    spec = dict(num_speculative_tokens=gamma)
    if draft == "ngram":
        spec["speculative_ngram"] = True
    else:
        seed = DRAFTS[draft]
        spec["speculative_model"] = tiny_model if seed is None else model_factory(seed=seed)
    llm = LLM(tiny_model, block_size=block_size, num_blocks=num_blocks, max_num_seqs=3,
              max_num_batched_tokens=budget, enable_prefix_caching=prefix_caching,
              **spec)  # fmt: skip
    manager = llm.block_manager
    requests, finished = {}, {}
    valid_hashes = set()  # chained hashes of full blocks of prompt + greedy output

    def check_cache():
        for h, block_id in manager.cached_block_ids.items():
            assert h in valid_hashes, f"block {block_id} cached with tokens no output has"

    def collect(outputs):
        for out in outputs:
            if out.finished and out.finish_reason != "abort":
                finished[out.request_id] = out.token_ids

    for action in actions:
        if action[0] == "add":
            _, prefix, tail, max_tokens, _ = action
            prompt = PREFIXES[prefix] + tail
            request_id = f"r{len(requests)}"
            try:
                llm.add_request(
                    request_id, prompt, SamplingParams(temperature=0.0, max_tokens=max_tokens)
                )
            except LLMInternalsError as err:
                assert "whole pool" in str(err)
                continue
            requests[request_id] = (prompt, max_tokens)
            tokens = prompt + greedy_reference(tiny_model, prompt, max_tokens)
            previous = ROOT_HASH
            for i in range(len(tokens) // block_size):
                previous = block_hash(previous, tokens[i * block_size : (i + 1) * block_size])
                valid_hashes.add(previous)
        elif action[0] == "step":
            collect(llm.step())
        else:
            llm.abort(f"r{action[1]}")
        invariants(llm)
        check_cache()

    for _ in range(2000):
        if not llm.has_unfinished():
            break
        collect(llm.step())
        invariants(llm)
        check_cache()
    assert not llm.has_unfinished(), "the engine did not drain"
    assert all(block.ref_count == 0 for block in manager.blocks)
    assert len(manager.free_block_ids) + len(manager.evictable_block_ids) == num_blocks
    if llm.speculation.draft is not None:
        draft_blocks = llm.speculation.draft.blocks
        assert draft_blocks.num_available_blocks == draft_blocks.num_blocks
        assert not llm.speculation.draft.states
    for request_id, out in finished.items():
        prompt, max_tokens = requests[request_id]
        assert out == greedy_reference(tiny_model, prompt, max_tokens), request_id
