"""The cross-entropy lesson's numbers, recomputed with math and plain torch."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch

from llm_internals.explain.lessons import cross_entropy as lesson_module


@pytest.fixture(scope="module")
def sections():
    return {s.title: s.steps for s in lesson_module.build().sections}


def _softmax(z):
    exps = [math.exp(v) for v in z]
    return [e / sum(exps) for e in exps]


def test_lesson_has_the_issue_outline(sections):
    assert list(sections) == [
        "The big picture",
        "What cross-entropy is",
        "The formula",
        "Why the negative log",
        "Binary cross-entropy",
        "Categorical cross-entropy",
        "A step-by-step numeric example",
        "Cross-entropy for language models",
        "Its gradient: softmax - onehot",
        "Summary",
    ]


def test_negative_log_table(sections):
    table = sections["Why the negative log"][0].values["loss for the right answer's probability p"]
    assert [row[0] for row in table.rows] == lesson_module.PROBABILITIES
    for p, nats, bits in table.rows:
        assert nats == pytest.approx(-math.log(p), rel=1e-12)
        assert bits == pytest.approx(-math.log(p) / math.log(2), rel=1e-12)


def test_binary_section(sections):
    values = sections["Binary cross-entropy"][0].values
    expected = [
        -(y * math.log(p) + (1 - y) * math.log(1 - p))
        for p, y in zip(lesson_module.BINARY_PROBS, lesson_module.BINARY_TARGETS, strict=True)
    ]
    assert values["per-example loss"].tolist() == pytest.approx(expected, rel=1e-12)
    assert values["mean loss"] == pytest.approx(sum(expected) / len(expected), rel=1e-12)


def test_categorical_and_step_by_step(sections):
    z, y = lesson_module.LOGITS, lesson_module.TARGET
    probs = _softmax(z)
    assert sections["Categorical cross-entropy"][0].values["p = softmax(z)"].tolist() == (
        pytest.approx(probs, rel=1e-12)
    )
    steps = sections["A step-by-step numeric example"]
    assert float(steps[0].values["m = max(z)"]) == max(z)
    assert steps[0].values["z - m"].tolist() == pytest.approx([v - max(z) for v in z])
    lse = math.log(sum(math.exp(v) for v in z))
    assert float(steps[1].values["logsumexp(z)"]) == pytest.approx(lse, rel=1e-12)
    assert steps[2].values["log p"].tolist() == pytest.approx([v - lse for v in z], rel=1e-12)
    assert steps[3].values["loss"] == pytest.approx(-math.log(probs[y]), rel=1e-12)
    assert steps[3].values["check: -log softmax(z)[y]"] == pytest.approx(-math.log(probs[y]))


def test_language_model_section(sections):
    text = lesson_module.TEXT
    vocab = sorted(set(text))
    pairs = Counter(zip(text, text[1:], strict=False))
    losses = []
    for a, b in zip(text, text[1:], strict=False):
        counts = [1 + pairs[(a, c)] for c in vocab]
        losses.append(-math.log(counts[vocab.index(b)] / sum(counts)))
    step, ppl, _trained = sections["Cross-entropy for language models"]  # curve: test_lesson_model
    table = step.values["loss per position"]
    assert [(r[0], r[1]) for r in table.rows] == list(zip(text, text[1:], strict=False))
    assert [r[2] for r in table.rows] == pytest.approx(losses, rel=1e-12)
    mean = sum(losses) / len(losses)
    assert step.values["mean loss (nats/token)"] == pytest.approx(mean, rel=1e-12)
    assert ppl.values["perplexity (bigram)"] == pytest.approx(math.exp(mean), rel=1e-12)
    assert ppl.values["perplexity (uniform)"] == pytest.approx(len(vocab), rel=1e-12)
    assert ppl.values["bits per byte (bigram)"] == pytest.approx(mean / math.log(2), rel=1e-12)


def test_gradient_section(sections):
    values = sections["Its gradient: softmax - onehot"][1].values
    probs = _softmax(lesson_module.LOGITS)
    onehot = [1.0 if j == lesson_module.TARGET else 0.0 for j in range(len(probs))]
    expected = [p - o for p, o in zip(probs, onehot, strict=True)]
    assert values["softmax(z)"].tolist() == pytest.approx(probs, rel=1e-12)
    assert values["onehot(y)"].tolist() == onehot
    assert values["softmax - onehot"].tolist() == pytest.approx(expected, rel=1e-12)
    z = torch.tensor(lesson_module.LOGITS, dtype=torch.float64, requires_grad=True)
    torch.nn.functional.cross_entropy(z[None], torch.tensor([lesson_module.TARGET])).backward()
    assert values["autograd dloss/dz"].tolist() == pytest.approx(z.grad.tolist(), rel=1e-12)
    assert float(values["max |difference|"]) < 1e-15
