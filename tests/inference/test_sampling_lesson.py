"""The sampling lesson's numbers, recomputed independently from the corpus with plain Python:
counts by str.find, probabilities as count ratios, kept sets by sorting, the draw by hand."""

import math

import pytest
import torch

from llm_internals.explain.lesson import Table
from llm_internals.explain.lessons import sampling as lesson_module

pytestmark = pytest.mark.network  # needs the Shakespeare corpus (downloaded once, then cached)


def count_following(text: str, context: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    at = text.find(context)
    while at >= 0:
        if at + len(context) < len(text):
            ch = text[at + len(context)]
            counts[ch] = counts.get(ch, 0) + 1
        at = text.find(context, at + 1)
    return counts


def shown(ch: str) -> str:
    return {" ": "' ' (space)", "\n": "'\\n'"}.get(ch, repr(ch))


@pytest.fixture(scope="module")
def lesson():
    return {s.title: s.steps for s in lesson_module.build().sections}


@pytest.fixture(scope="module")
def counts(shakespeare_text):
    return count_following(shakespeare_text, lesson_module.CONTEXT)


def by_char(table: Table) -> dict[str, list]:
    return {row[0]: row[1:] for row in table.rows}


def close(a, b):
    return math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-6)


def renormalized(weights: dict[str, float], kept: set[str]) -> dict[str, float]:
    total = sum(weights[c] for c in kept)
    return {c: (weights[c] / total if c in kept else 0.0) for c in weights}


def check_kept_table(table: Table, counts, kept: set[str]):
    total = sum(counts.values())
    expected = renormalized({c: n / total for c, n in counts.items()}, kept)
    rows = by_char(table)
    assert set(rows) == {shown(c) for c in counts}
    for c, n in counts.items():
        probability, *_, is_kept, renorm = rows[shown(c)]
        assert close(probability, n / total)
        assert is_kept == (c in kept)
        assert close(renorm, expected[c])


def test_distribution_is_the_corpus_counts(lesson, counts):
    step = lesson["One real next-token distribution"][0]
    total = sum(counts.values())
    assert step.values["occurrences of the context"] == total
    rows = by_char(step.values["candidates"])
    assert len(rows) == len(counts)
    for c, n in counts.items():
        count, logit, probability = rows[shown(c)]
        assert count == n and close(logit, math.log(n)) and close(probability, n / total)


def test_greedy_is_the_most_frequent(lesson, counts):
    values = lesson["Greedy decoding"][0].values
    best = max(counts, key=counts.get)
    assert values["greedy token"] == shown(best)
    assert close(values["its logit"], math.log(counts[best]))


def test_temperature_is_counts_to_the_power_one_over_t(lesson, counts):
    table = lesson["Temperature"][0].values["probabilities by temperature"]
    rows = by_char(table)
    for column, t in enumerate(lesson_module.TEMPERATURES):
        weights = {c: n ** (1 / t) for c, n in counts.items()}
        total = sum(weights.values())
        for c in counts:
            assert close(rows[shown(c)][column], weights[c] / total)


def test_top_k(lesson, counts):
    values = lesson["Top-k"][0].values
    ranked = sorted(counts, key=counts.get, reverse=True)
    kept = set(ranked[: lesson_module.TOP_K])
    check_kept_table(values["top-k"], counts, kept)
    assert close(values["k-th largest logit"], math.log(counts[ranked[lesson_module.TOP_K - 1]]))


def nucleus(weights: dict[str, float], p: float) -> set[str]:
    """Most likely first, keep while the mass kept so far is below p. The lesson's p must not
    sit on a boundary (within 1e-6 of a partial sum), or float rounding would decide."""
    total = sum(weights.values())
    kept, mass = set(), 0.0
    for c in sorted(weights, key=weights.get, reverse=True):
        assert abs(mass - p) > 1e-6, "top-p boundary too close to call: choose another p"
        if mass >= p:
            break
        kept.add(c)
        mass += weights[c] / total
    return kept


def test_top_p(lesson, counts):
    table = lesson["Top-p (nucleus)"][0].values["top-p"]
    kept = nucleus(counts, lesson_module.TOP_P)
    check_kept_table(table, counts, kept)
    total, mass = sum(counts.values()), 0.0
    rows = by_char(table)
    for c in sorted(sorted(counts), key=counts.get, reverse=True):  # ties: vocabulary order
        assert close(rows[shown(c)][1], mass)  # "mass before"
        mass += counts[c] / total


def min_p_kept(counts, min_p):
    return {c for c, n in counts.items() if n >= min_p * max(counts.values())}


def test_min_p_and_the_flat_comparison(lesson, counts, shakespeare_text):
    first, second = lesson["Min-p"]
    kept = min_p_kept(counts, lesson_module.MIN_P)
    check_kept_table(first.values["min-p"], counts, kept)
    total = sum(counts.values())
    assert close(first.values["threshold = min_p * max p"], 0.1 * max(counts.values()) / total)
    flat = count_following(shakespeare_text, lesson_module.FLAT_CONTEXT)
    expected = [
        [repr(ctx), len(d), min(lesson_module.TOP_K, len(d)), len(nucleus(d, lesson_module.TOP_P)),
         len(min_p_kept(d, lesson_module.MIN_P))]
        for ctx, d in ((lesson_module.CONTEXT, counts), (lesson_module.FLAT_CONTEXT, flat))
    ]  # fmt: skip
    assert second.values["tokens kept"].rows == expected
    assert expected[1][3] > expected[0][3]  # the flat distribution keeps more


def test_the_draw_follows_the_seed_and_the_cumulative_probabilities(lesson, counts):
    values = lesson["Drawing the token"][0].values
    u = float(torch.rand((), dtype=torch.float64, generator=torch.Generator().manual_seed(0)))
    assert values["u"] == u
    weights = {c: n ** (1 / 0.8) for c, n in counts.items()}
    kept = nucleus(weights, lesson_module.TOP_P)
    probs = renormalized(weights, kept)
    rows = values["kept tokens in vocabulary order"].rows
    assert [r[0] for r in rows] == [shown(c) for c in sorted(kept)]
    cumulative, chosen = 0.0, None
    for row, c in zip(rows, sorted(kept), strict=True):
        cumulative += probs[c]
        assert close(row[1], probs[c]) and close(row[2], cumulative)
        if chosen is None and cumulative > u:
            chosen = c
    assert values["sampled token"] == shown(chosen)
