"""SpeculativeStats, the gamma schedule and the n-gram lookup: counts, the two acceptance
figures, the expected tokens per target forward (checked against verify itself and the spec's
table), the adaptive rule's values, and prompt lookup against vLLM's rule written plainly."""

from __future__ import annotations

import random

import pytest
import torch

from llm_internals.errors import LLMInternalsError
from llm_internals.inference.speculative.adaptive import GammaSchedule
from llm_internals.inference.speculative.proposers import ngram_lookup
from llm_internals.inference.speculative.rejection import verify
from llm_internals.inference.speculative.stats import (
    SpeculativeStats,
    expected_tokens_per_forward,
)


def test_counts_and_the_two_acceptance_figures():
    stats = SpeculativeStats(gamma=3)
    stats.add_round(proposed=3, accepted=3, emitted=4)  # all accepted: 3 trials, 3 successes
    stats.add_round(proposed=3, accepted=1, emitted=2)  # x1 accepted, x2 rejected: 2 trials
    stats.add_round(proposed=0, accepted=0, emitted=1)  # nothing proposed (n-gram found none)
    assert (stats.proposed, stats.accepted, stats.examined, stats.rounds) == (6, 4, 5, 3)
    assert stats.acceptance_rate == 4 / 6 and stats.alpha == 4 / 5
    assert stats.tokens_per_target_forward == 7 / 3
    assert stats.per_position_acceptance() == [1.0, 0.5, 0.5]
    assert "acceptance rate 66.7%" in stats.summary()


@pytest.mark.parametrize(
    ("alpha", "gamma", "table"),
    [(0.8, 1, 1.8), (0.8, 2, 2.44), (0.8, 4, 3.36), (0.8, 8, 4.33), (0.6, 4, 2.31),
     (0.6, 8, 2.47)],
)  # fmt: skip
def test_expected_tokens_match_the_published_table(alpha, gamma, table):
    # docs/specs: Leviathan et al. 2023, E = (1 - alpha^(gamma+1)) / (1 - alpha), rounded.
    assert round(expected_tokens_per_forward(alpha, gamma), 2) == table
    assert expected_tokens_per_forward(1.0, gamma) == gamma + 1


def test_verify_emits_the_expected_tokens_per_forward():
    """Position-independent p and q: the mean tokens per round over 20k rounds equals the
    formula at beta = sum min(p, q), within 4.5 standard errors."""
    g = torch.Generator().manual_seed(0)
    gamma, rounds, vocab = 4, 20_000, 6
    p = torch.rand(vocab, dtype=torch.float64, generator=g) + 0.2
    q = torch.rand(vocab, dtype=torch.float64, generator=g) + 0.2
    p, q = p / p.sum(), q / q.sum()
    drafts = torch.multinomial(q, rounds * gamma, replacement=True, generator=g)
    verdict = verify(p.expand(rounds, gamma + 1, vocab), q.expand(rounds, gamma, vocab),
                     drafts.view(rounds, gamma), generator=g)  # fmt: skip
    tokens = (verdict.num_accepted + 1).double()
    beta = float(torch.minimum(p, q).sum())
    expected = expected_tokens_per_forward(beta, gamma)
    assert abs(float(tokens.mean()) - expected) < 4.5 * float(tokens.std()) / rounds**0.5


def test_adaptive_gamma_rule():
    schedule = GammaSchedule(8, adaptive=True)
    assert schedule.gamma == 8  # starts at gamma_max
    for alpha_hat, gamma in ((0.9, 8), (0.8, 6), (0.6, 2), (0.4, 1), (0.0, 1)):
        schedule.alpha_hat = alpha_hat
        assert schedule.gamma == gamma, alpha_hat
    schedule.alpha_hat = 1.0
    for _ in range(20):
        schedule.update(proposed=schedule.gamma, accepted=0)  # every first draft rejected
    assert schedule.gamma == 1
    assert GammaSchedule(5).gamma == 5  # fixed
    with pytest.raises(LLMInternalsError, match="speculative tokens must be") as err:
        GammaSchedule(0)
    assert "--num-speculative-tokens" in err.value.hint


def reference_ngram_lookup(tokens, min_n, max_n, k):
    """vLLM's rule transcribed plainly: the longest n in [min_n, max_n] such that the last n
    tokens occur earlier (ending before the last token); the earliest such occurrence; the up to
    k tokens after it."""
    for n in range(max_n, min_n - 1, -1):
        if n >= len(tokens):
            continue
        suffix = tokens[-n:]
        for start in range(len(tokens) - n):
            if tokens[start : start + n] == suffix:
                return tokens[start + n : start + n + k]
    return []


def test_ngram_lookup_matches_the_plain_rule():
    rng = random.Random(0)
    for _ in range(400):
        # A small alphabet gives many matches; ids past 2^8, 2^16 and 2^32 check that a byte
        # match inside a token (not at a token boundary) is never taken.
        alphabet = [rng.choice([1, 2, 256, 257, 65536, 2**33 + 1]) for _ in range(3)]
        tokens = [rng.choice(alphabet) for _ in range(rng.randrange(0, 30))]
        min_n = rng.randrange(1, 4)
        max_n = min_n + rng.randrange(0, 3)
        k = rng.randrange(0, 6)
        assert ngram_lookup(tokens, min_n, max_n, k) == reference_ngram_lookup(
            tokens, min_n, max_n, k
        ), (tokens, min_n, max_n, k)
    assert ngram_lookup([1, 2, 3, 4, 2, 3], 2, 3, 4) == [4, 2, 3]  # vLLM's docstring example
    assert ngram_lookup([0, 1, 0, 0, 1, 0], 1, 1, 2) == [1, 0]  # not the byte 0 inside 256
