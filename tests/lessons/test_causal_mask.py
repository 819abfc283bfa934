"""The causal-mask lesson's numbers, recomputed with plain torch (torch.triu, torch.softmax)."""

import math

import torch

from llm_internals.explain.lessons import causal_mask as lesson_module


def _steps():
    lesson = lesson_module.build()
    return {s.title: s.steps for s in lesson.sections}


def _reference(x, attention, causal):
    q = x[0] @ attention.q_proj.weight.T
    k = x[0] @ attention.k_proj.weight.T
    v = x[0] @ attention.v_proj.weight.T
    scores = q @ k.T / math.sqrt(lesson_module.D_MODEL)
    if causal:
        scores = scores + torch.triu(torch.full_like(scores, -math.inf), diagonal=1)
    weights = torch.softmax(scores, -1)
    return scores, weights, weights @ v


def test_weights_and_masked_scores_match_reference():
    steps = _steps()
    attention, x, changed = lesson_module.inputs()
    with torch.no_grad():
        _, open_weights, open_out = _reference(x, attention, False)
        scores, weights, out = _reference(x, attention, True)
        _, _, open_out2 = _reference(changed, attention, False)
        _, _, out2 = _reference(changed, attention, True)
    assert torch.allclose(steps["Without masking: a token sees the future"][0].values[
        "weights (no mask)"], open_weights, atol=1e-6)  # fmt: skip
    masked = steps["With masking"][0].values
    assert torch.allclose(masked["masked scores"], scores, atol=1e-6)
    assert torch.isinf(masked["masked scores"].triu(1)[torch.ones(4, 4).triu(1).bool()]).all()
    assert torch.allclose(masked["weights (causal)"], weights, atol=1e-6)
    assert torch.equal(masked["weights (causal)"].triu(1), torch.zeros(4, 4))
    # The leak experiment: which outputs differ when the last token changes.
    open_changed = [w for i, w in enumerate(lesson_module.WORDS)
                    if not torch.allclose(open_out[i], open_out2[i], atol=1e-7)]  # fmt: skip
    causal_changed = [w for i, w in enumerate(lesson_module.WORDS)
                      if not torch.allclose(out[i], out2[i], atol=1e-7)]  # fmt: skip
    leak = steps["Without masking: a token sees the future"][1].values["outputs that changed"]
    assert leak == ", ".join(open_changed) == "the, cat, sat, down"
    safe = steps["With masking"][1].values["outputs that changed"]
    assert safe == ", ".join(causal_changed) == "down"


def test_mask_matrices_match_reference():
    steps = _steps()
    matrix = steps["The mask matrix"][0].values
    assert torch.equal(matrix["causal_mask(4)"], torch.tril(torch.ones(4, 4, dtype=torch.int32)))
    additive = matrix["as added to the scores"]
    assert torch.equal(additive, torch.triu(torch.full((4, 4), -math.inf), diagonal=1))
    implementation = steps["Implementation"]
    cached = implementation[1].values["causal_mask(2, 5)"]
    assert torch.equal(cached, torch.tril(torch.ones(5, 5, dtype=torch.int32))[-2:])
    combined = implementation[2].values["causal AND padding (0, 1, 1, 1)"]
    expected = torch.tril(torch.ones(4, 4, dtype=torch.int32)) * torch.tensor([0, 1, 1, 1])
    assert torch.equal(combined, expected)
