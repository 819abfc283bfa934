"""Draws follow the distribution they claim (chi-square goodness of fit), and seeds reproduce.

The chi-square test: with N draws over k categories of expected probabilities q_i and observed
counts n_i, the statistic X2 = sum_i (n_i - N q_i)^2 / (N q_i) follows a chi-square distribution
with k - 1 degrees of freedom when the draws really come from q (N q_i >= 5 for every i, here
>= 1000). We reject at significance alpha = 0.001 when X2 exceeds the (1 - alpha) quantile. scipy
is not installed, so the quantile is computed here from the regularized lower incomplete gamma
function, chi2_cdf(x; d) = P(d/2, x/2), by bisection, and checked against the published table
value (e.g. NIST/SEMATECH e-Handbook, table 1.3.6.7.4: d = 7, alpha = 0.001 -> 24.322). The seeds
are fixed, so each test is deterministic: it cannot flake, and a wrong sampler fails every run.
"""

import math

import pytest
import torch

from llm_internals.inference.params import SamplingParams
from llm_internals.inference.sampling import Sampler, make_generator

ALPHA = 0.001
LOGITS = torch.tensor([1.2, 0.3, -0.4, 0.9, -1.0, 0.0, 0.5, -0.2])


def regularized_lower_gamma(a: float, x: float) -> float:
    """P(a, x) = gamma(a, x) / Gamma(a), by the series x^a e^-x sum_n x^n / Gamma(a + n + 1)."""
    if x <= 0:
        return 0.0
    term = 1.0 / a
    total = term
    for n in range(1, 10_000):
        term *= x / (a + n)
        total += term
        if term < total * 1e-17:
            break
    return total * math.exp(-x + a * math.log(x) - math.lgamma(a))


def chi2_critical_value(df: int, alpha: float) -> float:
    """The x with P(X2 > x) = alpha for df degrees of freedom (bisection on the CDF)."""
    low, high = 0.0, 1000.0
    for _ in range(200):
        mid = (low + high) / 2
        if 1.0 - regularized_lower_gamma(df / 2, mid / 2) > alpha:
            low = mid
        else:
            high = mid
    return (low + high) / 2


def chi2_statistic(counts: torch.Tensor, probs: torch.Tensor) -> float:
    expected = probs.double() * counts.sum()
    assert expected.min() >= 5, "chi-square needs at least 5 expected draws per category"
    return float(((counts.double() - expected) ** 2 / expected).sum())


def test_critical_values_match_published_tables():
    # NIST/SEMATECH upper critical values of the chi-square distribution.
    assert chi2_critical_value(7, 0.001) == pytest.approx(24.322, abs=5e-4)
    assert chi2_critical_value(4, 0.05) == pytest.approx(9.488, abs=5e-4)
    assert chi2_critical_value(2, 0.01) == pytest.approx(9.210, abs=5e-4)  # = -2 ln 0.01


def test_draws_follow_softmax_of_logits_over_temperature():
    n, temperature = 200_000, 0.7
    sampler = Sampler(torch.Generator().manual_seed(1234))
    params = [SamplingParams(temperature=temperature)] * n
    tokens = sampler(LOGITS.repeat(n, 1), params)
    counts = torch.bincount(tokens, minlength=len(LOGITS))
    critical = chi2_critical_value(len(LOGITS) - 1, ALPHA)
    assert chi2_statistic(counts, torch.softmax(LOGITS.double() / temperature, -1)) < critical
    # The test has power: the same draws reject the untempered distribution by a wide margin.
    assert chi2_statistic(counts, torch.softmax(LOGITS.double(), -1)) > 10 * critical


def test_per_request_generators_draw_from_the_same_distribution():
    n = 20_000
    generators = [make_generator(seed) for seed in range(n)]
    tokens = Sampler()(LOGITS.repeat(n, 1), [SamplingParams()] * n, generators=generators)
    counts = torch.bincount(tokens, minlength=len(LOGITS))
    critical = chi2_critical_value(len(LOGITS) - 1, ALPHA)
    assert chi2_statistic(counts, torch.softmax(LOGITS.double(), -1)) < critical


def test_truncated_draws_follow_the_renormalized_kept_distribution():
    n = 100_000
    params = SamplingParams(temperature=1.5, top_k=6, top_p=0.8)
    tokens = Sampler(torch.Generator().manual_seed(99))(LOGITS.repeat(n, 1), [params] * n)
    counts = torch.bincount(tokens, minlength=len(LOGITS))
    # Independent reference: sort the tempered probabilities, keep the 6 largest, then the
    # smallest prefix of those (renormalized) whose mass reaches 0.8.
    probs = torch.softmax(LOGITS.double() / 1.5, -1)
    order = probs.argsort(descending=True)[:6]
    top = probs[order] / probs[order].sum()
    needed = int((torch.cumsum(top, 0) < 0.8).sum()) + 1
    keep = order[:needed]
    assert counts[[i for i in range(len(LOGITS)) if i not in keep.tolist()]].sum() == 0
    expected = probs[keep] / probs[keep].sum()
    assert chi2_statistic(counts[keep], expected) < chi2_critical_value(len(keep) - 1, ALPHA)


def _generate(sampler, logits_steps, params, generators):
    return torch.stack([sampler(step, params, generators=generators) for step in logits_steps])


def test_same_seed_same_tokens_different_seed_different_tokens():
    steps = [torch.randn(1, 50, generator=torch.Generator().manual_seed(s)) for s in range(40)]
    params = [SamplingParams(temperature=1.0, seed=7)]
    first = _generate(Sampler(), steps, params, [make_generator(7)])
    again = _generate(Sampler(), steps, params, [make_generator(7)])
    other = _generate(Sampler(), steps, params, [make_generator(8)])
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_a_seeded_request_draws_the_same_tokens_whatever_the_batch():
    steps = [torch.randn(4, 50, generator=torch.Generator().manual_seed(s)) for s in range(9)]
    alone = _generate(
        Sampler(), [s[2:3] for s in steps], [SamplingParams(seed=11)], [make_generator(11)]
    )[:, 0]
    params = [SamplingParams(), SamplingParams(seed=5), SamplingParams(seed=11), SamplingParams()]
    generators = [None, make_generator(5), make_generator(11), None]
    batched = _generate(Sampler(torch.Generator().manual_seed(0)), steps, params, generators)
    assert torch.equal(batched[:, 2], alone)
