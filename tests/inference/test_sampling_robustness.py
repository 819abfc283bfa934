"""No parameter value that passes SamplingParams, and no logits row, breaks the Sampler (issue 12
§1): temperature 1e-44 / 5e-324 give the greedy limit (not temperature 1), top_p 1e-300 keeps the
top token (HF's TopPLogitsWarper agrees), a repetition penalty beyond the float32 range is
refused, and NaN / infinite rows raise SamplingRowError for those rows alone. Hypothesis fuzzes
extreme floats (subnormals, inf, NaN) against the sampler (derandomized: tests/conftest.py)."""

from __future__ import annotations

import math

import pytest
import torch
import transformers
from hypothesis import given, settings
from hypothesis import strategies as st

from llm_internals.errors import LLMInternalsError
from llm_internals.inference.params import FLOAT32_MAX, FLOAT32_TINY, SamplingParams
from llm_internals.inference.sampling import Sampler, SamplingRowError, invalid_rows, make_generator


def untied_logits(rows: int, vocab: int, seed: int = 0) -> torch.Tensor:
    """Random logits with a small spread (no distribution close to one-hot), all distinct."""
    torch.manual_seed(seed)
    return torch.randn(rows, vocab) * 0.5


@pytest.mark.parametrize("temperature", [1e-44, 5e-324, 1e-300])
def test_tiny_temperatures_give_the_greedy_limit(temperature):
    logits = untied_logits(4, 500)
    params = [SamplingParams(temperature=temperature, seed=s) for s in range(4)]
    for step in range(5):
        generators = [make_generator(step * 10 + s) for s in range(4)]
        tokens = Sampler()(logits, params, generators)
        assert tokens.tolist() == logits.argmax(dim=-1).tolist()
    # Power: at temperature 1 (what 5e-324 silently became) the argmax is rarely drawn.
    at_one = [Sampler()(logits, [SamplingParams(seed=s)] * 4, [make_generator(s)] * 4)
              for s in range(5)]  # fmt: skip
    assert sum(int((t == logits.argmax(dim=-1)).sum()) for t in at_one) < 5


def test_top_p_below_float32_keeps_the_top_token_as_hf_does():
    logits = untied_logits(3, 200, seed=1)
    sampler = Sampler()
    _, probs = sampler.distribution(logits, [SamplingParams(top_p=1e-300)] * 3)
    hf = transformers.TopPLogitsWarper(top_p=1e-300)(None, logits.clone())
    assert torch.equal(probs > 0, hf > float("-inf"))
    assert (probs > 0).sum(dim=-1).tolist() == [1, 1, 1]
    tokens = sampler(logits, [SamplingParams(top_p=1e-300, seed=3)] * 3, [make_generator(3)] * 3)
    assert tokens.tolist() == logits.argmax(dim=-1).tolist()


@pytest.mark.parametrize("value", [1e-40, 0.0, -1.0, 1e39, 5e-324, math.inf, math.nan])
def test_repetition_penalty_beyond_float32_is_refused(value):
    with pytest.raises(LLMInternalsError, match="repetition_penalty must be a number in"):
        SamplingParams(repetition_penalty=value)


@pytest.mark.parametrize("penalty", [FLOAT32_TINY, FLOAT32_MAX])
def test_repetition_penalty_at_the_float32_bounds_is_computed_exactly(penalty):
    """z -> z / r for seen positive logits, z * r for seen negative ones (HF's rule), done in
    float64 here as the reference: the sampler's distribution is its softmax (at 1.2e-38 one-hot
    on the largest seen positive logit; at 3.4e38 the seen tokens get probability 0)."""
    logits = untied_logits(2, 64, seed=2) * 10
    seen = [[3, 5, 7, 40, 41], [0, 1, 2]]
    z = logits.double()
    expected = z.clone()
    for row, ids in enumerate(seen):
        for t in ids:
            expected[row, t] = z[row, t] / penalty if z[row, t] > 0 else z[row, t] * penalty
    params = [SamplingParams(repetition_penalty=penalty, seed=9)] * 2
    _, probs = Sampler().distribution(logits, params, prompt_ids=seen, output_ids=[[], []])
    reference = torch.softmax(expected, dim=-1)
    assert torch.allclose(probs.double(), reference, atol=1e-6)
    assert torch.isfinite(probs).all()
    tokens = Sampler()(logits, params, [make_generator(9)] * 2, prompt_ids=seen,
                       output_ids=[[], []])  # fmt: skip
    assert all(reference[row, t] > 0 for row, t in enumerate(tokens.tolist()))


def test_bad_rows_fail_alone_and_the_others_draw_as_without_them():
    logits = untied_logits(5, 50, seed=4)
    logits[1, 7] = math.nan
    logits[3] = -math.inf
    logits[4, 2] = math.inf
    params = [SamplingParams(temperature=0.8, top_p=0.9, seed=s) for s in range(5)]
    with pytest.raises(SamplingRowError) as err:
        Sampler()(logits, params, [make_generator(s) for s in range(5)])
    assert err.value.rows == {1: "has NaN", 3: "has no finite value", 4: "has +inf"}
    alone = Sampler()(
        logits[[0, 2]], [params[0], params[2]], [make_generator(0), make_generator(2)]
    )
    assert err.value.tokens.tolist() == [alone[0].item(), -1, alone[1].item(), -1, -1]
    assert "logits row 1 has NaN" in str(err.value)


finite_or_not = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=True, width=32),
    st.floats(-30, 30, width=32),
    st.just(0.0),
)
any_float = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=True),
    st.sampled_from([0.0, 5e-324, 1e-300, 1e-44, FLOAT32_TINY, 1.0, FLOAT32_MAX, 1e300]),
)
maybe_params = st.builds(
    dict,
    temperature=any_float,
    top_k=st.integers(0, 12),
    top_p=any_float,
    min_p=any_float,
    repetition_penalty=any_float,
    frequency_penalty=st.floats(-2, 2),
    presence_penalty=st.floats(-2, 2),
    seed=st.integers(0, 2**64 - 1),
)


def params_or_none(fields: dict) -> SamplingParams | None:
    """The SamplingParams, or None when it refuses the values (with an LLMInternalsError)."""
    try:
        return SamplingParams(**fields)
    except LLMInternalsError:
        return None


@settings(max_examples=300, deadline=None)
@given(
    rows=st.lists(st.lists(finite_or_not, min_size=8, max_size=8), min_size=1, max_size=4),
    fields=st.lists(maybe_params, min_size=4, max_size=4),
    history=st.lists(st.integers(0, 7), max_size=6),
)
def test_fuzz_the_sampler_never_raises_anything_but_a_row_error(rows, fields, history):
    logits = torch.tensor(rows, dtype=torch.float32)
    # Each value SamplingParams accepts on its own is kept (the others fall back to defaults).
    params = [SamplingParams(**{k: v for k, v in f.items() if params_or_none({k: v})})
              for f in fields[: len(rows)]]  # fmt: skip
    generators = [make_generator(p.seed) for p in params]
    bad = invalid_rows(logits)
    try:
        tokens = Sampler()(logits, params, generators, prompt_ids=[history] * len(rows),
                           output_ids=[history[:2]] * len(rows))  # fmt: skip
    except SamplingRowError as err:
        assert err.rows == bad and bad
        tokens = err.tokens
    else:
        assert not bad
    for row, token in enumerate(tokens.tolist()):
        if row in bad:
            assert token == -1
        else:  # a real token that the model did not rule out
            assert 0 <= token < 8 and logits[row, token] > float("-inf")
            if params[row].greedy and not params[row].uses_penalties:
                assert logits[row, token] == logits[row].max()


def test_fuzz_values_from_the_issue_are_handled():
    """The three values of issue 12 §1, explicitly: two work, one is refused."""
    logits = untied_logits(1, 30, seed=5)
    for fields in ({"temperature": 1e-44}, {"top_p": 1e-300}):
        token = Sampler()(logits, [SamplingParams(**fields, seed=1)], [make_generator(1)])
        assert token.item() == logits.argmax().item()
    assert params_or_none({"repetition_penalty": 1e-40}) is None
