"""The qkv lesson's numbers, recomputed with plain matrix products and torch.softmax."""

import math

import torch
import torch.nn.functional as F

from llm_internals.explain.lessons import qkv as lesson_module


def _values():
    lesson = lesson_module.build()
    values = {}
    for section in lesson.sections:
        for step in section.steps:
            values.update(step.values)
    return values


def test_every_attention_step_matches_plain_torch():
    v = _values()
    x = v["X (embeddings)"]
    assert x.shape == (3, lesson_module.D_MODEL)
    assert torch.equal(x, (x * 10).round() / 10)  # readable one-decimal numbers
    q, k, val = x @ v["W_q"].T, x @ v["W_k"].T, x @ v["W_v"].T
    assert torch.allclose(v["Q"], q, atol=1e-6)
    assert torch.allclose(v["K"], k, atol=1e-6)
    assert torch.allclose(v["V"], val, atol=1e-6)
    scores = [[sum(a * b for a, b in zip(qi, kj, strict=True)) for kj in k.tolist()]
              for qi in q.tolist()]  # fmt: skip
    assert torch.allclose(v["scores"], torch.tensor(scores), atol=1e-6)
    scaled = torch.tensor(scores) / math.sqrt(4)
    assert torch.allclose(v["scaled scores"], scaled, atol=1e-6)
    weights = torch.softmax(scaled, dim=-1)
    assert torch.allclose(v["weights"], weights, atol=1e-6)
    assert torch.allclose(v["row sums"], torch.ones(3), atol=1e-6)
    out = weights @ val
    assert torch.allclose(v["output = weights V"], out, atol=1e-6)
    assert torch.allclose(v["layer output"], out, atol=1e-6)


def test_layer_output_equals_torch_reference_attention():
    v = _values()
    x = v["X (embeddings)"][None]
    ref = F.scaled_dot_product_attention(x @ v["W_q"].T, x @ v["W_k"].T, x @ v["W_v"].T)[0]
    assert torch.allclose(v["layer output"], ref, atol=1e-6)
