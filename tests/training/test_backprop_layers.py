"""Each hand-written backward pass against autograd, in float64 on plain tensors."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from llm_internals.training.backprop.activations import gelu_tanh_backward, sigmoid_backward
from llm_internals.training.backprop.attention import (
    attention_core_backward,
    attention_core_forward,
    self_attention_backward,
    self_attention_forward,
)
from llm_internals.training.backprop.block import block_backward, block_forward
from llm_internals.training.backprop.layernorm import layernorm_backward, layernorm_forward
from llm_internals.training.backprop.linear import (
    embedding_backward,
    linear_backward,
    linear_forward,
)

F64 = torch.float64


def rel_error(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return float((ours - ref).norm() / ref.norm())


def leaf(*shape, seed: int, scale: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g, dtype=F64) * scale).requires_grad_(True)


def test_linear_backward():
    x, w, b = leaf(2, 3, 4, seed=0), leaf(5, 4, seed=1), leaf(5, seed=2)
    dy = leaf(2, 3, 5, seed=3).detach()
    F.linear(x, w, b).backward(dy)
    y, cache = linear_forward(x.detach(), w.detach(), b.detach())
    torch.testing.assert_close(y, F.linear(x, w, b).detach())
    dx, dw, db = linear_backward(dy, cache)
    for ours, ref in ((dx, x.grad), (dw, w.grad), (db, b.grad)):
        assert rel_error(ours, ref) < 1e-12


def test_embedding_backward_sums_repeated_ids():
    table = leaf(6, 3, seed=4)
    ids = torch.tensor([[1, 4, 1], [0, 1, 5]])
    dy = leaf(2, 3, 3, seed=5).detach()
    F.embedding(ids, table).backward(dy)
    ours = embedding_backward(dy, ids, 6)
    assert rel_error(ours, table.grad) < 1e-12
    assert torch.equal(ours[2], torch.zeros(3, dtype=F64))  # id 2 never occurs
    torch.testing.assert_close(ours[1], dy[0, 0] + dy[0, 2] + dy[1, 1])


def test_activation_backwards():
    x = leaf(50, seed=6, scale=3.0)
    dy = leaf(50, seed=7).detach()
    F.gelu(x, approximate="tanh").backward(dy)
    assert rel_error(gelu_tanh_backward(dy, x.detach()), x.grad) < 1e-12
    x.grad = None
    torch.sigmoid(x).backward(dy)
    assert rel_error(sigmoid_backward(dy, torch.sigmoid(x.detach())), x.grad) < 1e-12


def test_layernorm_backward():
    x, w, b = leaf(2, 3, 8, seed=8, scale=2.0), leaf(8, seed=9), leaf(8, seed=10)
    dy = leaf(2, 3, 8, seed=11).detach()
    F.layer_norm(x, (8,), w, b, eps=1e-5).backward(dy)
    y, cache = layernorm_forward(x.detach(), w.detach(), b.detach(), 1e-5)
    torch.testing.assert_close(y, F.layer_norm(x, (8,), w, b, eps=1e-5).detach())
    dx, dw, db = layernorm_backward(dy, cache)
    for ours, ref in ((dx, x.grad), (dw, w.grad), (db, b.grad)):
        assert rel_error(ours, ref) < 1e-10


def test_attention_core_backward_against_sdpa():
    q, k, v = (leaf(2, 3, 5, 4, seed=s) for s in (12, 13, 14))
    dout = leaf(2, 3, 5, 4, seed=15).detach()
    ref = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    ref.backward(dout)
    out, cache = attention_core_forward(q.detach(), k.detach(), v.detach())
    torch.testing.assert_close(out, ref.detach())
    dq, dk, dv = attention_core_backward(dout, cache)
    for ours, grad in ((dq, q.grad), (dk, k.grad), (dv, v.grad)):
        assert rel_error(ours, grad) < 1e-10
    # Causality in the backward pass: the last key's gradient comes only from the last query.
    assert torch.equal(dk[..., -1, :] != 0, (cache.probs[..., -1, -1, None] != 0).expand(2, 3, 4))


def _attention_params(seed: int, dim: int) -> dict[str, torch.Tensor]:
    names = ("q_proj", "k_proj", "v_proj", "o_proj")
    params = {}
    for i, name in enumerate(names):
        params[f"{name}.weight"] = leaf(dim, dim, seed=seed + 2 * i, scale=1 / math.sqrt(dim))
        params[f"{name}.bias"] = leaf(dim, seed=seed + 2 * i + 1, scale=0.1)
    return params


def _reference_attention(x, p, n_heads):
    batch, seq, dim = x.shape

    def heads(t):
        return t.view(batch, seq, n_heads, dim // n_heads).transpose(1, 2)

    q = heads(F.linear(x, p["q_proj.weight"], p["q_proj.bias"]))
    k = heads(F.linear(x, p["k_proj.weight"], p["k_proj.bias"]))
    v = heads(F.linear(x, p["v_proj.weight"], p["v_proj.bias"]))
    out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    return F.linear(
        out.transpose(1, 2).reshape(batch, seq, dim), p["o_proj.weight"], p["o_proj.bias"]
    )


def test_self_attention_backward():
    x, params = leaf(2, 6, 8, seed=20), _attention_params(30, 8)
    dout = leaf(2, 6, 8, seed=21).detach()
    _reference_attention(x, params, n_heads=2).backward(dout)
    _, cache = self_attention_forward(x.detach(), {n: p.detach() for n, p in params.items()}, 2)
    dx, grads = self_attention_backward(dout, cache)
    assert rel_error(dx, x.grad) < 1e-10
    assert set(grads) == set(params)
    for name, p in params.items():
        if name == "k_proj.bias":  # exactly zero: softmax ignores a per-row shift of the scores
            assert grads[name].norm() < 1e-12 and p.grad.norm() < 1e-12
            continue
        assert rel_error(grads[name], p.grad) < 1e-10, name


def test_block_backward():
    dim = 8
    params = {f"attn.{n}": p for n, p in _attention_params(40, dim).items()}
    params.update(
        {
            "norm1.weight": leaf(dim, seed=50),
            "norm1.bias": leaf(dim, seed=51),
            "norm2.weight": leaf(dim, seed=52),
            "norm2.bias": leaf(dim, seed=53),
            "ffn.up_proj.weight": leaf(4 * dim, dim, seed=54, scale=0.3),
            "ffn.up_proj.bias": leaf(4 * dim, seed=55, scale=0.1),
            "ffn.down_proj.weight": leaf(dim, 4 * dim, seed=56, scale=0.2),
            "ffn.down_proj.bias": leaf(dim, seed=57, scale=0.1),
        }
    )
    x, dy = leaf(2, 5, dim, seed=58), leaf(2, 5, dim, seed=59).detach()
    p = params
    u = F.layer_norm(x, (dim,), p["norm1.weight"], p["norm1.bias"], eps=1e-5)
    h = x + _reference_attention(u, {n[5:]: t for n, t in p.items() if n.startswith("attn.")}, 2)
    u2 = F.layer_norm(h, (dim,), p["norm2.weight"], p["norm2.bias"], eps=1e-5)
    mid = F.gelu(F.linear(u2, p["ffn.up_proj.weight"], p["ffn.up_proj.bias"]), approximate="tanh")
    y = h + F.linear(mid, p["ffn.down_proj.weight"], p["ffn.down_proj.bias"])
    y.backward(dy)
    ours_y, cache = block_forward(x.detach(), {n: t.detach() for n, t in p.items()}, 2, 1e-5)
    torch.testing.assert_close(ours_y, y.detach())
    dx, grads = block_backward(dy, cache)
    assert rel_error(dx, x.grad) < 1e-10
    assert set(grads) == set(params)
    for name, t in params.items():
        if name == "attn.k_proj.bias":  # exactly zero, see test_self_attention_backward
            assert grads[name].norm() < 1e-12 and t.grad.norm() < 1e-12
            continue
        assert rel_error(grads[name], t.grad) < 1e-10, name
