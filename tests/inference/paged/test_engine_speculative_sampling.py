"""Sampled speculative decoding in the engine keeps the target's distribution.

The verify step itself is tested exactly and with 200k-draw chi-square tests in
tests/inference/test_speculative_rejection.py. Here the engine's plumbing around it is checked:
p and q at the right positions, the sampling parameters (temperature, top-k, a repetition
penalty whose history includes the earlier draft tokens) applied to both, each request's own
generator. Over many seeded requests, the joint distribution of the first three tokens (the
second and third come from one draft/verify round of 2 draft tokens) must match the target's
exact distribution, computed from full forwards of the target alone: chi-square over the 8
cells top_k = 2 leaves, alpha = 1e-3, fixed seeds (deterministic).
"""

from __future__ import annotations

import pytest
import torch

from llm_internals.inference.paged import LLM
from llm_internals.inference.params import SamplingParams
from llm_internals.inference.sampling import Sampler

from ..test_sampling_draws import chi2_critical_value, chi2_statistic
from .conftest import make_tiny_model

ALPHA = 1e-3
PROMPT = [3, 1, 4, 1, 5]
PARAMS = dict(temperature=0.9, top_k=2, repetition_penalty=1.4, max_tokens=4)
REQUESTS = 1200


def exact_joint(model, params: SamplingParams) -> dict[tuple[int, int, int], float]:
    """P(t1, t2, t3) of the target alone: the sampler's distribution at each prefix."""
    sampler = Sampler()

    def next_probs(output: list[int]) -> torch.Tensor:
        with torch.no_grad():
            logits = model(torch.tensor([PROMPT + output]))[0, -1:].float()
        return sampler.distribution(logits, [params], [PROMPT], [output])[1][0].double()

    joint = {}
    first = next_probs([])
    for t1 in first.nonzero().flatten().tolist():
        second = next_probs([t1])
        for t2 in second.nonzero().flatten().tolist():
            third = next_probs([t1, t2])
            for t3 in third.nonzero().flatten().tolist():
                joint[(t1, t2, t3)] = float(first[t1] * second[t2] * third[t3])
    return joint


def first_three_tokens(target, draft, seeds) -> list[tuple[int, ...]]:
    llm = LLM(target, block_size=4, num_blocks=2000, max_num_seqs=400,
              max_num_batched_tokens=4000, num_speculative_tokens=2,
              **draft)  # fmt: skip
    outs = llm.generate([PROMPT] * len(seeds), [SamplingParams(seed=s, **PARAMS) for s in seeds])
    stats = llm.stats()
    assert stats.spec_proposed_at[1] > 0 and stats.blocks_used == 0
    return [tuple(o.token_ids[:3]) for o in outs], stats


@pytest.mark.parametrize("draft_kind", ["model", "ngram"])
def test_first_tokens_follow_the_target_distribution(tiny_model, draft_kind):
    draft = (
        dict(speculative_model=make_tiny_model(seed=11))
        if draft_kind == "model"
        else dict(speculative_ngram=True)
    )
    params = SamplingParams(**PARAMS)
    exact = exact_joint(tiny_model, params)
    cells = sorted(exact)
    assert len(cells) == 8
    triples, stats = first_three_tokens(tiny_model, draft, range(REQUESTS))
    counts = torch.tensor([triples.count(c) for c in cells])
    assert counts.sum() == REQUESTS, "every triple must be one of the 8 cells"
    probs = torch.tensor([exact[c] for c in cells])
    assert chi2_statistic(counts, probs) < chi2_critical_value(len(cells) - 1, ALPHA)
    assert 0 < stats.spec_accepted_tokens < stats.spec_proposed_tokens  # both paths taken
    # seeded: the same seeds give the same tokens in another batch mix
    again, _ = first_three_tokens(tiny_model, draft, [5, 3, 900])
    assert again == [triples[5], triples[3], triples[900]]

