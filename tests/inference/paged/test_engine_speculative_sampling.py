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
REQUESTS = 600
# A draft model, with a repetition penalty (p and q see the drafts before each position).
MODEL_CASE = ([3, 1, 4, 1, 5], dict(temperature=0.9, top_k=2, repetition_penalty=1.4))
# Prompt lookup: both tokens top_k = 2 leaves first already occur in the prompt, followed by
# two others (20 21, 22 23), so every request drafts 2 tokens after its first (no penalty
# here: it would keep the model from repeating). Those drafts are outside the top 2, so
# they are always rejected: the residual path (p without the draft token) is checked.
NGRAM_CASE = ([27, 20, 21, 32, 22, 23, 3, 1, 4, 1, 5], dict(temperature=0.9, top_k=2))


def exact_joint(model, prompt, params: SamplingParams) -> dict[tuple[int, int, int], float]:
    """P(t1, t2, t3) of the target alone: the sampler's distribution at each prefix."""
    sampler = Sampler()

    def next_probs(output: list[int]) -> torch.Tensor:
        with torch.no_grad():
            logits = model(torch.tensor([prompt + output]))[0, -1:].float()
        return sampler.distribution(logits, [params], [prompt], [output])[1][0].double()

    joint = {}
    first = next_probs([])
    for t1 in first.nonzero().flatten().tolist():
        second = next_probs([t1])
        for t2 in second.nonzero().flatten().tolist():
            third = next_probs([t1, t2])
            for t3 in third.nonzero().flatten().tolist():
                joint[(t1, t2, t3)] = float(first[t1] * second[t2] * third[t3])
    return joint


def first_three_tokens(target, draft, prompt, params, seeds):
    llm = LLM(target, block_size=4, num_blocks=2000, max_num_seqs=300,
              max_num_batched_tokens=4000, num_speculative_tokens=2,
              **draft)  # fmt: skip
    requests = [SamplingParams(seed=s, max_tokens=4, **params) for s in seeds]
    outs = llm.generate([prompt] * len(seeds), requests)
    stats = llm.stats()
    assert stats.speculative.per_position_proposed[1] > 0 and stats.blocks_used == 0
    return [tuple(o.token_ids[:3]) for o in outs], stats


@pytest.mark.parametrize("draft_kind", ["model", "ngram"])
def test_first_tokens_follow_the_target_distribution(tiny_model, draft_kind):
    if draft_kind == "model":
        draft, (prompt, params) = dict(speculative_model=make_tiny_model(seed=11)), MODEL_CASE
    else:
        draft, (prompt, params) = dict(speculative_ngram=True), NGRAM_CASE
    exact = exact_joint(tiny_model, prompt, SamplingParams(**params))
    cells = sorted(exact)
    assert len(cells) == 8
    triples, stats = first_three_tokens(tiny_model, draft, prompt, params, range(REQUESTS))
    counts = torch.tensor([triples.count(c) for c in cells])
    assert counts.sum() == REQUESTS, "every triple must be one of the 8 cells"
    probs = torch.tensor([exact[c] for c in cells])
    assert chi2_statistic(counts, probs) < chi2_critical_value(len(cells) - 1, ALPHA)
    if draft_kind == "model":
        assert 0 < stats.speculative.accepted < stats.speculative.proposed  # both paths taken
    # seeded: the same seeds give the same tokens in another batch mix
    again, _ = first_three_tokens(tiny_model, draft, prompt, params, [5, 3, 500])
    assert again == [triples[5], triples[3], triples[500]]
