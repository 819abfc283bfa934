"""The softmax lesson's numbers, recomputed independently with math and torch.softmax."""

import math

import torch

from llm_internals.explain.lesson import Table
from llm_internals.explain.lessons import softmax as lesson_module
from llm_internals.layers.softmax import softmax


def _steps():
    lesson = lesson_module.build()
    return {s.title: s.steps for s in lesson.sections}


def _reference_probs(logits, t=1.0):
    exps = [math.exp(x / t - max(logits) / t) for x in logits]
    return [e / sum(exps) for e in exps]


def test_basics_section_matches_hand_computation():
    steps = _steps()["What softmax does"]
    values = steps[1].values
    logits = lesson_module.LOGITS
    assert values["max(x)"].item() == max(logits)
    expected_shifted = [x - max(logits) for x in logits]
    assert torch.allclose(values["x - max(x)"], torch.tensor(expected_shifted))
    expected_exp = [math.exp(v) for v in expected_shifted]
    assert torch.allclose(values["exp(x - max(x))"], torch.tensor(expected_exp))
    assert math.isclose(values["sum"].item(), sum(expected_exp), rel_tol=1e-6)
    assert torch.allclose(values["probabilities"], torch.tensor(_reference_probs(logits)))


def test_overflow_section_shows_inf_nan_and_the_shifted_answer():
    steps = _steps()["Why subtract the max"]
    assert torch.isinf(steps[0].values["exp(x) in float32"]).all()
    assert torch.isnan(steps[1].values["naive exp(x) / sum exp(x)"]).all()
    safe = steps[2].values["softmax(x)"]
    assert torch.allclose(safe, torch.tensor(_reference_probs([2.0, 1.0, 0.0])), atol=1e-7)
    assert torch.allclose(safe, torch.tensor(lesson_module.HUGE_LOGITS).softmax(-1))


def test_masking_section_nan_uniform_and_zeros():
    steps = _steps()["Masking: -inf or -1e9?"]
    partly = steps[0].values["softmax"]
    assert torch.allclose(partly, torch.tensor([*_reference_probs([2.0, 1.0]), 0.0, 0.0]))
    assert torch.isnan(steps[1].values["torch.softmax"]).all()
    assert torch.allclose(steps[2].values["softmax"], torch.full((4,), 0.25))
    assert torch.equal(steps[3].values["llm_internals softmax(-inf row)"], torch.zeros(4))


def test_temperature_table_matches_reference_and_entropy_grows():
    table = _steps()["Temperature"][0].values["probabilities by temperature"]
    assert isinstance(table, Table)
    entropies = []
    for t, *rest in table.rows:
        probs, entropy = rest[:-1], rest[-1]
        expected = _reference_probs(lesson_module.LOGITS, t)
        assert all(math.isclose(p, q, rel_tol=1e-6) for p, q in zip(probs, expected, strict=True))
        assert math.isclose(entropy, -sum(p * math.log2(p) for p in expected), rel_tol=1e-6)
        entropies.append(entropy)
    assert entropies == sorted(entropies) and entropies[-1] < math.log2(3)


def test_library_softmax_equals_torch_and_keeps_gradients_finite():
    x = torch.randn(5, 7, dtype=torch.float64)
    assert torch.allclose(softmax(x), torch.softmax(x, -1), atol=1e-15)
    assert torch.allclose(softmax(x, temperature=0.7), torch.softmax(x / 0.7, -1), atol=1e-15)
    masked = x.clone().requires_grad_(True)
    inputs = masked.masked_fill(torch.ones(5, 7).tril(-3).bool(), -math.inf)
    inputs = torch.cat([inputs, torch.full((1, 7), -math.inf)])
    out = softmax(inputs)
    assert torch.equal(out[-1], torch.zeros(7, dtype=torch.float64))
    out.sum().backward()
    assert torch.isfinite(masked.grad).all()


def test_softmax_rejects_non_positive_temperature():
    import pytest

    from llm_internals.errors import LLMInternalsError

    with pytest.raises(LLMInternalsError, match="temperature"):
        softmax(torch.zeros(3), temperature=0.0)
