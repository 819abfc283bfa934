"""No request stops the engine (issue 12 §1): a request whose logits are NaN finishes with reason
"error" and frees its blocks, the others in the same steps go on to the tokens `generate` gives
them; hypothesis fuzzes extreme sampling values and NaN-producing prompts against the engine
(derandomized: tests/conftest.py) and no exception escapes a step."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llm_internals.errors import LLMInternalsError
from llm_internals.inference.generate import generate
from llm_internals.inference.paged import LLM
from llm_internals.inference.params import FLOAT32_TINY, SamplingParams
from llm_internals.inference.sampling import SamplingRowError

from .conftest import check_block_invariants, make_tiny_model

POISON = 47  # the token whose embedding is NaN: any prompt holding it gives NaN logits


@pytest.fixture(scope="module")
def poisoned_model():
    model = make_tiny_model(seed=1)
    with torch.no_grad():
        model.tok_emb.weight[POISON] = math.nan
    return model


def test_a_nan_request_fails_alone_and_the_others_continue(poisoned_model):
    llm = LLM(poisoned_model, block_size=4, num_blocks=40, max_num_seqs=4)
    greedy = SamplingParams(temperature=0.0, max_tokens=10)
    sampled = SamplingParams(temperature=0.9, top_p=0.8, seed=5, max_tokens=10)
    llm.add_request("ok-greedy", [5, 6, 7, 8, 9], greedy)
    llm.add_request("nan", [1, 2, POISON, 3], greedy)
    llm.add_request("ok-sampled", [11, 12, 13], sampled)
    llm.add_request("nan-n2", [POISON, 4], SamplingParams(n=2, max_tokens=4))
    finals = {}
    while llm.has_unfinished():
        for out in llm.step():
            check_block_invariants(llm)
            if out.finished:
                finals[(out.request_id, out.index)] = out
    for key in [("nan", 0), ("nan-n2", 0), ("nan-n2", 1)]:
        assert finals[key].finish_reason == "error" and finals[key].token_ids == []
        assert "NaN" in finals[key].error
    for name, prompt, params in [("ok-greedy", [5, 6, 7, 8, 9], greedy),
                                 ("ok-sampled", [11, 12, 13], sampled)]:  # fmt: skip
        expected = generate(poisoned_model, None, prompt, max_new_tokens=10, params=params,
                            eos_token_id=None)  # fmt: skip
        assert finals[(name, 0)].token_ids == expected.token_ids
        assert finals[(name, 0)].finish_reason == "length" and finals[(name, 0)].error is None
    stats = llm.stats()
    assert stats.blocks_used == 0 and stats.num_requests_finished == 4
    # The engine takes new work after the failures, including on the blocks they freed.
    again = llm.generate([5, 6, 7, 8, 9], greedy)[0]
    assert again.token_ids == finals[("ok-greedy", 0)].token_ids


def test_generate_raises_one_clear_error_for_nan_logits(poisoned_model):
    with pytest.raises(SamplingRowError, match="logits row 0 has NaN"):
        generate(poisoned_model, None, [POISON, 1], max_new_tokens=3)


extreme = st.sampled_from([0.0, 5e-324, 1e-300, 1e-44, FLOAT32_TINY, 1e-3, 1.0, 7.0, 1e30, 1e300])
request = st.tuples(
    st.lists(st.integers(0, 47), min_size=1, max_size=8),  # may hold POISON
    st.builds(
        dict,
        temperature=extreme,
        top_k=st.sampled_from([0, 1, 5]),
        top_p=st.sampled_from([1.0, 0.5, 1e-300, 1e-44, 1 - 1e-16]),
        min_p=st.sampled_from([0.0, 5e-324, 0.5, 1.0]),
        repetition_penalty=st.sampled_from([1.0, FLOAT32_TINY, 1e-40, 1e-300, 3e38, 1e39]),
        presence_penalty=st.sampled_from([0.0, -2.0, 2.0]),
        seed=st.sampled_from([None, 0, 2**64 - 1]),
        max_tokens=st.integers(1, 6),
        n=st.sampled_from([1, 2]),
    ),
)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(requests=st.lists(request, min_size=1, max_size=6))
def test_fuzz_no_exception_escapes_an_engine_step(poisoned_model, requests):
    llm = LLM(poisoned_model, block_size=4, num_blocks=24, max_num_seqs=4,
              max_num_batched_tokens=16)  # fmt: skip
    expected_errors = set()
    for i, (prompt, fields) in enumerate(requests):
        try:
            params = SamplingParams(**fields)
        except LLMInternalsError:
            assert fields["repetition_penalty"] in (1e-40, 1e-300, 1e39)  # the only refusals
            continue
        llm.add_request(f"r{i}", prompt, params)
        if POISON in prompt:
            expected_errors |= {(f"r{i}", k) for k in range(params.n)}
    finals = {}
    for _ in range(200):
        if not llm.has_unfinished():
            break
        for out in llm.step():  # nothing may raise here
            if out.finished:
                finals[(out.request_id, out.index)] = out.finish_reason
        check_block_invariants(llm)
    assert not llm.has_unfinished()
    assert {key for key, reason in finals.items() if reason == "error"} == expected_errors
    assert set(finals.values()) <= {"error", "length", "context", "eos", "stop"}
    assert llm.stats().blocks_used == 0
