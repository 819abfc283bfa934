"""The muon lesson's numbers, recomputed: singular values by iterating the scalar polynomial,
the bf16 run by torch.optim.Muon's own Newton-Schulz, the split by the parameter names."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from llm_internals.explain.lessons import muon as lesson_module

A, B, C = 3.4445, -4.7750, 2.0315


@pytest.fixture(scope="module")
def sections():
    return {s.title: s.steps for s in lesson_module.build().sections}


def _example():
    g = torch.Generator().manual_seed(lesson_module.SEED)
    u, _ = np.linalg.qr(torch.randn(4, 4, generator=g, dtype=torch.float64).numpy())
    v, _ = np.linalg.qr(torch.randn(4, 4, generator=g, dtype=torch.float64).numpy())
    return u @ np.diag(lesson_module.SINGULAR_VALUES) @ v.T, u, v


def test_what_orthogonalizing_means(sections):
    g, u, v = _example()
    first, second = sections["What orthogonalizing an update means"]
    np.testing.assert_allclose(first.values["G"].numpy(), g, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(
        first.values["singular values of G"].numpy(), lesson_module.SINGULAR_VALUES, rtol=1e-12
    )
    np.testing.assert_allclose(second.values["U V^T"].numpy(), u @ v.T, atol=1e-12)
    np.testing.assert_allclose(second.values["singular values of U V^T"].numpy(), 1.0, rtol=1e-12)


def test_polynomial_and_iterations(sections):
    g, u, v = _example()
    _, poly, table_step, bf16 = sections["Newton-Schulz iterations on a 4x4 matrix"]
    for s, ps in poly.values["p(s)"].rows:
        assert ps == pytest.approx(A * s + B * s**3 + C * s**5, rel=1e-12)
    rows = table_step.values["singular values per iteration"].rows
    assert [r[0] for r in rows] == list(range(6))
    # Singular values evolve by the scalar polynomial alone (U and V never change).
    s = np.array(lesson_module.SINGULAR_VALUES) / np.linalg.norm(g)
    distances = []
    for row in rows:
        np.testing.assert_allclose(
            sorted(row[1:5], reverse=True), np.sort(np.abs(s))[::-1], rtol=1e-9
        )
        distance = np.linalg.norm(u @ np.diag(s) @ v.T - u @ v.T)
        assert row[5] == pytest.approx(distance, rel=1e-9)
        distances.append(distance)
        s = A * s + B * s**3 + C * s**5
    final = np.sort(rows[-1][1:5])
    assert final[-1] / final[0] < 2 and distances[-1] < distances[0] / 3  # the text's claims
    np.testing.assert_allclose(
        table_step.values["result"].numpy(), u @ np.diag(s_final(g)) @ v.T, atol=1e-12
    )
    from torch.optim._muon import _zeropower_via_newtonschulz

    reference = _zeropower_via_newtonschulz(torch.from_numpy(g), (A, B, C), 5, 1e-7)
    np.testing.assert_allclose(
        bf16.values["singular values, bfloat16 run"].numpy(),
        torch.linalg.svdvals(reference.double()).numpy(),
        rtol=1e-12,
    )


def s_final(g):
    s = np.array(lesson_module.SINGULAR_VALUES) / np.linalg.norm(g)
    for _ in range(5):
        s = A * s + B * s**3 + C * s**5
    return s


def test_parameter_split(sections):
    rows = sections["Why only hidden matrices"][0].values["parameter split for a one-block GPT-2"]
    model = lesson_module.tiny_gpt2()
    assert [r[0] for r in rows.rows] == [n for n, _ in model.named_parameters()]
    for name, shape, role, optimizer in rows.rows:
        param = dict(model.named_parameters())[name]
        assert shape == "x".join(map(str, param.shape))
        if name in ("tok_emb.weight", "pos_emb.weight"):
            expected = "embedding"
        elif param.ndim == 1:
            expected = "vector"
        else:
            expected = "hidden matrix"
        assert role == expected, name
        assert optimizer == ("Muon" if expected == "hidden matrix" else "AdamW")
