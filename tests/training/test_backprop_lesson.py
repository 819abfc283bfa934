"""The backprop lesson's numbers, recomputed with math (the 2-2-1 network) and with autograd on
a plain torch.nn.functional GPT-2 block (the transformer section)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from llm_internals.explain.lessons import backprop as lesson_module


@pytest.fixture(scope="module")
def sections():
    return {s.title: s.steps for s in lesson_module.build().sections}


def sigmoid(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v))


def hand_network(W1, b1, W2, b2):
    """Forward and every partial derivative in scalar math."""
    x, y = lesson_module.X[0], lesson_module.Y[0][0]
    z1 = [W1[i][0] * x[0] + W1[i][1] * x[1] + b1[i] for i in range(2)]
    h = [sigmoid(v) for v in z1]
    z2 = W2[0][0] * h[0] + W2[0][1] * h[1] + b2[0]
    p = sigmoid(z2)
    loss = -(y * math.log(p) + (1 - y) * math.log(1 - p))
    d = {"z1": z1, "h": h, "z2": z2, "p": p, "L": loss}
    d["dL/dp"] = -y / p + (1 - y) / (1 - p)
    d["dp/dz2"] = p * (1 - p)
    d["dL/dz2"] = d["dL/dp"] * d["dp/dz2"]
    d["dL/dW2"] = [d["dL/dz2"] * h[j] for j in range(2)]
    d["dL/db2"] = d["dL/dz2"]
    d["dL/dh"] = [d["dL/dz2"] * W2[0][j] for j in range(2)]
    d["dh/dz1"] = [h[j] * (1 - h[j]) for j in range(2)]
    d["dL/dz1"] = [d["dL/dh"][j] * d["dh/dz1"][j] for j in range(2)]
    d["dL/dW1"] = [[d["dL/dz1"][i] * x[k] for k in range(2)] for i in range(2)]
    d["dL/db1"] = d["dL/dz1"]
    return d


def assert_close(shown, expected) -> None:
    shown = torch.as_tensor(shown, dtype=torch.float64)
    torch.testing.assert_close(
        shown, torch.tensor(expected, dtype=torch.float64).reshape(shown.shape), rtol=1e-12, atol=0
    )


def test_forward_and_loss(sections):
    ref = hand_network(lesson_module.W1, lesson_module.B1, lesson_module.W2, lesson_module.B2)
    steps = sections["Forward pass"]
    assert_close(steps[1].values["z1"], ref["z1"])
    assert_close(steps[1].values["h"], ref["h"])
    assert_close(steps[2].values["z2"], ref["z2"])
    assert_close(steps[2].values["p"], ref["p"])
    assert_close(sections["Loss"][0].values["L"], ref["L"])


def test_every_partial_derivative(sections):
    ref = hand_network(lesson_module.W1, lesson_module.B1, lesson_module.W2, lesson_module.B2)
    shown = {}
    for step in sections["A step-by-step numeric example"]:
        shown.update(step.values)
    assert set(shown) == {
        "dL/dp", "dp/dz2", "dL/dz2", "dL/dW2", "dL/db2", "dL/dh", "dh/dz1", "dL/dz1",
        "dL/dW1", "dL/db1",
    }  # fmt: skip
    for name, value in shown.items():
        assert_close(value, ref[name])
    assert float(shown["dL/dz2"]) == pytest.approx(ref["p"] - 1.0, rel=1e-12)  # p - y


def test_weight_update_lowers_the_loss(sections):
    lr = lesson_module.LEARNING_RATE
    ref = hand_network(lesson_module.W1, lesson_module.B1, lesson_module.W2, lesson_module.B2)
    W1 = [[lesson_module.W1[i][k] - lr * ref["dL/dW1"][i][k] for k in range(2)] for i in range(2)]
    b1 = [lesson_module.B1[i] - lr * ref["dL/db1"][i] for i in range(2)]
    W2 = [[lesson_module.W2[0][j] - lr * ref["dL/dW2"][j] for j in range(2)]]
    b2 = [lesson_module.B2[0] - lr * ref["dL/db2"]]
    values = sections["The weight update"][0].values
    assert_close(values["new W1"], W1)
    assert_close(values["new b1"], b1)
    assert_close(values["new W2"], W2[0])
    assert_close(values["new b2"], b2)
    after = hand_network(W1, b1, W2, b2)["L"]
    assert_close(values["loss before"], ref["L"])
    assert_close(values["loss after"], after)
    assert after < ref["L"]


def functional_gpt2_loss(p: dict[str, torch.Tensor], ids, targets, n_heads: int = 2):
    """A GPT-2 forward written with torch.nn.functional only (the reference for the lesson)."""
    batch, seq = ids.shape
    dim = p["tok_emb.weight"].shape[1]
    x = F.embedding(ids, p["tok_emb.weight"]) + p["pos_emb.weight"][:seq]
    pre = "blocks.0."

    def ln(t, name):
        return F.layer_norm(t, (dim,), p[pre + name + ".weight"], p[pre + name + ".bias"], 1e-5)

    def lin(t, name):
        return F.linear(t, p[pre + name + ".weight"], p[pre + name + ".bias"])

    u = ln(x, "norm1")
    q, k, v = (
        lin(u, f"attn.{n}_proj").view(batch, seq, n_heads, -1).transpose(1, 2) for n in "qkv"
    )
    att = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2)
    x = x + lin(att.reshape(batch, seq, dim), "attn.o_proj")
    mid = F.gelu(lin(ln(x, "norm2"), "ffn.up_proj"), approximate="tanh")
    x = x + lin(mid, "ffn.down_proj")
    x = F.layer_norm(x, (dim,), p["norm_f.weight"], p["norm_f.bias"], 1e-5)
    logits = F.linear(x, p["tok_emb.weight"])
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def test_transformer_gradient_check(sections):
    model, ids, targets = lesson_module.block_model_and_batch()
    params = {n: t.detach().clone().requires_grad_(True) for n, t in model.named_parameters()}
    loss = functional_gpt2_loss(params, ids, targets)
    loss.backward()
    step = sections["The same machinery on a transformer block"][1]
    assert step.values["loss (hand-written forward)"] == pytest.approx(
        float(loss.detach()), rel=1e-13
    )
    assert step.values["loss (DecoderLM + torch cross_entropy)"] == pytest.approx(
        float(loss.detach()), rel=1e-13
    )
    rows = step.values["gradient check"].rows
    assert [r[0] for r in rows] == list(params)
    for name, shape, ours_norm, ref_norm, rel in rows:
        grad = params[name].grad
        assert shape == "x".join(map(str, grad.shape))
        if name == "blocks.0.attn.k_proj.bias":
            assert rel == "exactly 0 in theory" and float(grad.norm()) < 1e-12
            assert float(ours_norm) < 1e-12 and float(ref_norm) < 1e-12
            continue
        assert float(ref_norm) == pytest.approx(float(grad.norm()), rel=1e-6)
        assert float(ours_norm) == pytest.approx(float(grad.norm()), rel=1e-6)
        assert float(rel) < 1e-8


def test_finite_differences(sections):
    model, ids, targets = lesson_module.block_model_and_batch()
    params = {n: t.detach().clone().requires_grad_(True) for n, t in model.named_parameters()}
    functional_gpt2_loss(params, ids, targets).backward()
    rows = (
        sections["The same machinery on a transformer block"][2].values["finite differences"].rows
    )
    h = 1e-5
    for (name, index), (shown_name, shown_index, backprop, numeric) in zip(
        lesson_module.FD_COORDINATES, rows, strict=True
    ):
        assert (shown_name, shown_index) == (name, str(list(index)))
        assert float(backprop) == pytest.approx(float(params[name].grad[index]), rel=1e-8)
        with torch.no_grad():
            plus = {n: t.clone() for n, t in params.items()}
            minus = {n: t.clone() for n, t in params.items()}
            plus[name][index] += h
            minus[name][index] -= h
            expected = (
                float(functional_gpt2_loss(plus, ids, targets))
                - float(functional_gpt2_loss(minus, ids, targets))
            ) / (2 * h)
        assert float(numeric) == pytest.approx(expected, abs=1e-10)
        assert float(numeric) == pytest.approx(float(backprop), abs=1e-8)
