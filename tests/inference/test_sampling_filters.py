"""Top-k, top-p and min-p keep exactly the right candidates: crafted logits with ties and exact
boundaries, and agreement with HF transformers' logits warpers on random logits."""

import math

import pytest
import torch
from transformers.generation.logits_process import (
    MinPLogitsWarper,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from llm_internals.inference.params import SamplingParams
from llm_internals.inference.sampling import Sampler
from llm_internals.inference.truncation import min_p_mask, top_k_mask, top_p_mask
from llm_internals.trace import recording

# Probabilities that are exact in float32 (powers of two), so mass boundaries are exact too.
DYADIC = [0.5, 0.25, 0.125, 0.0625, 0.0625]


def dyadic_logits(order=(0, 1, 2, 3, 4)):
    return torch.log(torch.tensor([DYADIC[i] for i in order]))


def kept(mask):
    return set(torch.nonzero(mask.flatten()).flatten().tolist())


def kept_by_sampler(logits, **params):
    """The set of tokens the Sampler keeps, read from what it recorded."""
    with recording() as rec:
        Sampler(torch.Generator().manual_seed(0))(logits[None], [SamplingParams(**params)])
    return kept(rec.get("sampling.kept")), rec.get("sampling.probs")[0]


@pytest.mark.parametrize(
    ("k", "expected"),
    [(1, {0}), (2, {0, 2, 3}), (3, {0, 2, 3}), (4, {0, 1, 2, 3}), (5, {0, 1, 2, 3, 4}), (0, None)],
)
def test_top_k_keeps_the_k_largest_and_everything_tied_with_the_kth(k, expected):
    logits = torch.tensor([3.0, 1.0, 2.0, 2.0, 0.0])
    expected = expected if expected is not None else {0, 1, 2, 3, 4}
    assert kept(top_k_mask(logits[None], k)) == expected
    if k > 0:  # HF keeps ties with the k-th value the same way
        hf = TopKLogitsWarper(top_k=k)(None, logits[None].clone())
        assert kept(hf > -math.inf) == expected


def test_top_k_larger_than_vocab_keeps_all():
    assert kept(top_k_mask(torch.randn(1, 7), 100)) == set(range(7))


@pytest.mark.parametrize(
    ("top_p", "expected"),
    [
        (0.5, {0}),  # the first token alone already has mass 0.5: reached exactly
        (0.5 + 1e-6, {0, 1}),
        (0.75, {0, 1}),  # 0.5 + 0.25 reaches 0.75 exactly: token 2 is not needed
        (0.75 + 1e-6, {0, 1, 2}),
        (0.875, {0, 1, 2}),
        (0.1, {0}),  # the most likely token is always kept
        (1.0, {0, 1, 2, 3, 4}),
    ],
)
def test_top_p_keeps_the_smallest_set_reaching_p(top_p, expected):
    logits = dyadic_logits()
    assert kept(top_p_mask(logits[None], top_p)) == expected
    hf = TopPLogitsWarper(top_p=top_p)(None, logits[None].clone())
    assert kept(hf > -math.inf) == expected


def test_top_p_keeps_every_token_tied_with_the_last_one_needed():
    # 0.5 + 0.25 + 0.125 = 0.875 < 0.9, so one of the two 0.0625 tokens is needed; both are kept
    # (HF keeps one of them, whichever its unstable sort puts last).
    logits = dyadic_logits()
    assert kept(top_p_mask(logits[None], 0.9)) == {0, 1, 2, 3, 4}
    hf_kept = kept(TopPLogitsWarper(top_p=0.9)(None, logits[None].clone()) > -math.inf)
    assert {0, 1, 2} < hf_kept <= {0, 1, 2, 3, 4} and len(hf_kept) == 4
    # Ties among the top tokens: p = 0.3 needs one of two equal tokens, and both are kept.
    tied_top = torch.log(torch.tensor([0.375, 0.375, 0.25]))
    assert kept(top_p_mask(tied_top[None], 0.3)) == {0, 1}


def test_top_p_ignores_order_of_the_vocabulary():
    order = (3, 0, 4, 2, 1)  # token i here is DYADIC[order[i]]
    logits = dyadic_logits(order)
    assert kept(top_p_mask(logits[None], 0.75)) == {1, 4}


@pytest.mark.parametrize(
    ("min_p", "expected"),
    [
        (0.0, {0, 1, 2, 3, 4}),
        (0.125, {0, 1, 2, 3, 4}),  # threshold 0.0625: equal probabilities are kept
        (0.125 + 1e-6, {0, 1, 2}),
        (0.25, {0, 1, 2}),
        (0.5, {0, 1}),
        (1.0, {0}),
    ],
)
def test_min_p_keeps_tokens_at_least_min_p_times_the_top_probability(min_p, expected):
    logits = dyadic_logits()
    assert kept(min_p_mask(logits[None], min_p)) == expected
    hf = MinPLogitsWarper(min_p=min_p)(None, logits[None].clone())
    assert kept(hf > -math.inf) == expected


def test_filters_match_hf_warpers_on_random_logits():
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(64, 300, generator=gen) * 3
    for k in (1, 5, 40, 299):
        hf = TopKLogitsWarper(top_k=k)(None, logits.clone()) > -math.inf
        assert torch.equal(top_k_mask(logits, k), hf)
    for p in (0.05, 0.3, 0.9, 0.99):
        hf = TopPLogitsWarper(top_p=p)(None, logits.clone()) > -math.inf
        assert torch.equal(top_p_mask(logits, p), hf)
    for m in (0.01, 0.1, 0.5):
        hf = MinPLogitsWarper(min_p=m)(None, logits.clone()) > -math.inf
        assert torch.equal(min_p_mask(logits, m), hf)


def test_per_row_parameters_equal_hf_applied_row_by_row():
    """One batched call with different params per row equals HF's chain for each row alone:
    temperature, then top-k, top-p, min-p (HF's order), then softmax."""
    gen = torch.Generator().manual_seed(2)
    logits = torch.randn(6, 50, generator=gen) * 2
    rows = [
        SamplingParams(),
        SamplingParams(temperature=0.7),
        SamplingParams(temperature=1.3, top_k=7),
        SamplingParams(temperature=0.5, top_p=0.8),
        SamplingParams(temperature=0.9, top_k=20, top_p=0.9, min_p=0.05),
        SamplingParams(min_p=0.2),
    ]
    with recording() as rec:
        Sampler(torch.Generator().manual_seed(0))(logits, rows)
    ours = rec.get("sampling.probs")
    for i, p in enumerate(rows):
        scores = logits[i : i + 1].clone()
        warpers = [TemperatureLogitsWarper(p.temperature)]
        if p.top_k:
            warpers.append(TopKLogitsWarper(top_k=p.top_k))
        if p.top_p < 1:
            warpers.append(TopPLogitsWarper(top_p=p.top_p))
        if p.min_p:
            warpers.append(MinPLogitsWarper(min_p=p.min_p))
        for warper in warpers:
            scores = warper(None, scores)
        expected = torch.softmax(scores, dim=-1)[0]
        assert torch.allclose(ours[i], expected, atol=1e-6), i
        assert kept(ours[i] > 0) == kept(expected > 0)


def test_top_k_row_and_top_p_row_in_one_batch_equal_hf_outside_a_recording():
    """Issue 12 §6: top-p's fast path sorts only as many tokens as the row with the LARGEST
    support has. A batch with a top-k row (3 tokens left) and a top-p row (a nucleus of many
    more) catches a fast path that takes the smallest support instead. No recording here: a
    recording switches the fast path off (the test above runs with one)."""
    gen = torch.Generator().manual_seed(12)
    logits = torch.randn(2, 100, generator=gen) * 0.5  # untied, a wide nucleus
    rows = [SamplingParams(top_k=3), SamplingParams(top_p=0.9)]
    _, ours = Sampler().distribution(logits, rows)
    hf_top_k = TopKLogitsWarper(top_k=3)(None, logits[0:1].clone())
    hf_top_p = TopPLogitsWarper(top_p=0.9)(None, logits[1:2].clone())
    for row, scores in enumerate((hf_top_k, hf_top_p)):
        expected = torch.softmax(scores, dim=-1)[0]
        assert kept(ours[row] > 0) == kept(expected > 0), row
        assert torch.allclose(ours[row], expected, atol=1e-6), row
    assert int((ours[1] > 0).sum()) > 3  # the nucleus is wider than the top-k row's support


def test_renormalized_probabilities_over_the_kept_set():
    kept_set, probs = kept_by_sampler(dyadic_logits(), top_k=2)
    assert kept_set == {0, 1}
    assert torch.allclose(probs, torch.tensor([2 / 3, 1 / 3, 0, 0, 0]))
    kept_set, probs = kept_by_sampler(dyadic_logits(), top_p=0.875)
    assert kept_set == {0, 1, 2}
    assert torch.allclose(probs, torch.tensor([4 / 7, 2 / 7, 1 / 7, 0, 0]))


def test_filters_compose_as_an_intersection_in_order():
    # top-k 3 keeps {0,1,2}; top-p 0.6 on the renormalized (4/7, 2/7, 1/7) keeps {0,1}
    # (4/7 < 0.6); min-p 0.6 on the renormalized (2/3, 1/3) drops token 1 (1/3 < 0.6 * 2/3).
    kept_set, probs = kept_by_sampler(dyadic_logits(), top_k=3, top_p=0.6, min_p=0.6)
    assert kept_set == {0}
    assert torch.equal(probs, torch.tensor([1.0, 0, 0, 0, 0]))


def test_greedy_takes_the_argmax_and_never_consumes_randomness():
    logits = torch.tensor([[0.1, 2.0, 1.9], [5.0, 5.0, 1.0]])
    generator = torch.Generator().manual_seed(3)
    state = generator.get_state()
    tokens = Sampler(generator)(logits, [SamplingParams(temperature=0)] * 2)
    assert tokens.tolist() == [1, 0]  # ties: the lowest id, as torch.argmax
    assert torch.equal(generator.get_state(), state)


def test_masked_and_very_unlikely_tokens_are_never_sampled():
    logits = torch.tensor([[0.0, -math.inf, 0.0, -math.inf]]).repeat(2000, 1)
    tokens = Sampler(torch.Generator().manual_seed(4))(logits, [SamplingParams()] * 2000)
    assert set(tokens.tolist()) == {0, 2}


def test_fast_paths_equal_the_recorded_full_paths():
    """Outside a recording, top-p sorts only tokens with probability and the draw sums only
    over them; both must give exactly what the full versions (used while recording) give."""
    from llm_internals.inference.sampling import inverse_cdf_sample

    gen = torch.Generator().manual_seed(5)
    logits = torch.randint(-3, 3, (32, 400), generator=gen).float()  # many ties
    logits = logits.masked_fill(~top_k_mask(logits, 60), -math.inf)
    probs = torch.softmax(logits, -1)
    uniforms = torch.rand(32, dtype=torch.float64, generator=gen)
    uniforms[0] = 1 - 2**-53  # the largest double below 1
    for p in (0.2, 0.5, 0.9):
        fast = top_p_mask(logits, p)
        with recording():
            full = top_p_mask(logits, p)
        assert torch.equal(fast, full)
    fast = inverse_cdf_sample(probs, uniforms)
    with recording():
        full = inverse_cdf_sample(probs, uniforms)
    assert torch.equal(fast, full)
    assert (probs.gather(-1, fast[:, None]) > 0).all()
