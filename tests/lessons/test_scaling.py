"""The scaling lesson's statistics, recomputed from the same samples with plain torch."""

import math

import pytest
import torch

from llm_internals.explain.lessons import scaling as lesson_module


@pytest.fixture(scope="module")
def steps():
    lesson = lesson_module.build()
    return {s.title: s.steps for s in lesson.sections}


def _reference(d_k, scale):
    q, k, _ = lesson_module.samples(d_k)
    scores = (q[:, 0] * k[:, 0]).sum(-1)  # (rows, keys): plain elementwise dot products
    scaled = scores * scale
    weights = torch.softmax(scaled, dim=-1)
    entropy = -(weights * torch.log2(weights.clamp_min(1e-45))).sum(-1)
    return scores, scaled, weights, entropy


def _scale(kind, d):
    return {"unscaled": 1.0, "scaled by 1/sqrt(d_k)": 1 / math.sqrt(d),
            "scaled by 1/d_k (too much)": 1 / d}[kind]  # fmt: skip


def test_variance_table_matches_and_is_near_d_k(steps):
    table = steps["Checking Var(q . k) = d_k"][0].values["variance of q . k"]
    for d, derived, measured, ratio in table.rows:
        scores = _reference(d, 1.0)[0]
        assert derived == d
        assert math.isclose(measured, float(scores.var()), rel_tol=1e-4)
        assert math.isclose(ratio, measured / d, rel_tol=1e-9)
        assert abs(ratio - 1) < 0.1  # 16k samples: standard error about 1.1 %


def test_softmax_tables_match_reference(steps):
    values = {**steps["What large scores do to softmax"][0].values,
              **steps["Why sqrt(d_k) is right"][0].values}  # fmt: skip
    for kind, table in values.items():
        for d, var, max_weight, entropy in table.rows:
            _, scaled, weights, ent = _reference(d, _scale(kind, d))
            assert math.isclose(var, float(scaled.var()), rel_tol=1e-4)
            assert math.isclose(max_weight, float(weights.max(-1).values.mean()), rel_tol=1e-4)
            assert math.isclose(entropy, float(ent.mean()), rel_tol=1e-4)
    unscaled = values["unscaled"].rows
    assert [r[3] for r in unscaled] == sorted((r[3] for r in unscaled), reverse=True)
    assert all(abs(r[1] - 1) < 0.1 for r in values["scaled by 1/sqrt(d_k)"].rows)


def test_example_rows_match_reference(steps):
    d = lesson_module.HEAD_SIZES[-1]
    unscaled, scaled = steps["Without scaling"]
    _, raw, raw_weights, _ = _reference(d, 1.0)
    assert torch.allclose(unscaled.values["scores (unscaled)"], raw[0], atol=1e-4)
    assert torch.allclose(unscaled.values["weights (unscaled)"], raw_weights[0], atol=1e-6)
    _, sc, sc_weights, _ = _reference(d, 1 / math.sqrt(d))
    assert torch.allclose(scaled.values["scores / sqrt(d_k)"], sc[0], atol=1e-5)
    assert torch.allclose(scaled.values["weights (scaled)"], sc_weights[0], atol=1e-6)


def test_putting_it_together_follows_the_formula(steps):
    d = lesson_module.HEAD_SIZES[1]
    (step,) = steps["Putting it all together"]
    q, k, v = lesson_module.samples(d)
    scores, scaled, weights, _ = _reference(d, 1 / math.sqrt(d))
    values = step.values
    assert torch.allclose(values["1. scores = q . k"], scores[0], atol=1e-4)
    assert torch.allclose(values["2. scaled = scores / sqrt(d_k)"], scaled[0], atol=1e-5)
    assert torch.allclose(values["3. weights = softmax(scaled)"], weights[0], atol=1e-6)
    assert torch.allclose(values["4. output = weights V"], weights[0] @ v[0, 0], atol=1e-5)
    assert math.isclose(values["std of all scaled scores"], float(scaled.std()), rel_tol=1e-4)
    assert abs(values["std of all scaled scores"] - 1) < 0.1
