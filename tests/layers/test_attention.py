"""Scaled dot-product attention and multi-head attention against torch's own implementations."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from llm_internals.layers.attention import scaled_dot_product_attention, sdpa_attention
from llm_internals.layers.masks import (
    causal_mask,
    combine_masks,
    padding_mask,
    positions_from_attention_mask,
)
from llm_internals.layers.multihead import MultiHeadAttention
from llm_internals.trace import recording

TOL = {torch.float32: 1e-5, torch.float64: 1e-12}


def _qkv(batch, heads, q_len, k_len, dim, dtype, seed=0, kv_heads=None):
    g = torch.Generator().manual_seed(seed)
    kv_heads = heads if kv_heads is None else kv_heads
    q = torch.randn(batch, heads, q_len, dim, generator=g, dtype=dtype)
    k = torch.randn(batch, kv_heads, k_len, dim, generator=g, dtype=dtype)
    v = torch.randn(batch, kv_heads, k_len, dim, generator=g, dtype=dtype)
    return q, k, v


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(1, 1, 1, 1, 4), (2, 3, 5, 5, 8), (3, 2, 7, 11, 16)])
def test_matches_torch_without_mask(dtype, shape):
    q, k, v = _qkv(*shape, dtype)
    ours = scaled_dot_product_attention(q, k, v)
    ref = F.scaled_dot_product_attention(q, k, v)
    assert (ours - ref).abs().max() < TOL[dtype]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_causal_padding_and_both_match_torch(dtype):
    q, k, v = _qkv(3, 4, 9, 9, 16, dtype, seed=1)
    attention_mask = torch.ones(3, 9, dtype=torch.long)
    attention_mask[1, 6:] = 0  # right padding
    attention_mask[2, :3] = 0  # left padding
    causal = causal_mask(9, 9)
    pads = padding_mask(attention_mask)
    torch_causal = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert (scaled_dot_product_attention(q, k, v, causal) - torch_causal).abs().max() < TOL[dtype]
    ours_pad = scaled_dot_product_attention(q, k, v, pads)
    torch_pad = F.scaled_dot_product_attention(q, k, v, attn_mask=pads)
    assert (ours_pad - torch_pad).abs().max() < TOL[dtype]
    both = combine_masks(causal, pads)
    ours_both = scaled_dot_product_attention(q, k, v, both)
    torch_both = F.scaled_dot_product_attention(q, k, v, attn_mask=both)
    real_rows = both.any(-1, keepdim=True).expand_as(ours_both[..., :1]).squeeze(-1)
    # Rows with no visible key are NaN in torch; compare the rest, check ours are zero there.
    assert (ours_both - torch_both)[real_rows].abs().max() < TOL[dtype]
    assert torch.equal(ours_both[~real_rows], torch.zeros_like(ours_both[~real_rows]))


def test_fully_masked_row_gives_zeros_and_finite_gradients():
    q, k, v = _qkv(1, 2, 3, 4, 8, torch.float64, seed=2)
    q.requires_grad_(True)
    v.requires_grad_(True)
    mask = torch.ones(3, 4, dtype=torch.bool)
    mask[1] = False
    for fn in (scaled_dot_product_attention, sdpa_attention):
        out = fn(q, k, v, mask)
        assert not torch.isnan(out).any()
        assert torch.equal(out[:, :, 1], torch.zeros_like(out[:, :, 1]))
        out.sum().backward()
        assert torch.isfinite(q.grad).all() and torch.isfinite(v.grad).all()
        q.grad = v.grad = None


def test_sdpa_path_matches_scratch_with_gqa_and_masks():
    q, k, v = _qkv(2, 6, 5, 8, 8, torch.float64, seed=3, kv_heads=2)
    attention_mask = torch.tensor([[0, 0, 1, 1, 1, 1, 1, 1], [1] * 8])
    mask = combine_masks(causal_mask(5, 8), padding_mask(attention_mask))
    k_rep, v_rep = k.repeat_interleave(3, dim=1), v.repeat_interleave(3, dim=1)
    scratch = scaled_dot_product_attention(q, k_rep, v_rep, mask)
    fused = sdpa_attention(q, k, v, mask)
    assert (scratch - fused).abs().max() < 1e-12
    fused_causal = sdpa_attention(q[:, :, :5], k[:, :, :5], v[:, :, :5], is_causal=True)
    scratch_causal = scaled_dot_product_attention(
        q, k_rep[:, :, :5], v_rep[:, :, :5], causal_mask(5)
    )
    assert (fused_causal - scratch_causal).abs().max() < 1e-12


def test_records_every_step():
    q, k, v = _qkv(1, 1, 3, 3, 4, torch.float64, seed=4)
    mask = causal_mask(3)
    with recording() as rec:
        out = scaled_dot_product_attention(q, k, v, mask)
    scores = q @ k.transpose(-2, -1)
    assert torch.allclose(rec.get("scores"), scores, atol=1e-12)
    assert torch.allclose(rec.get("scaled_scores"), scores / math.sqrt(4), atol=1e-12)
    masked = rec.get("masked_scores")
    assert torch.isinf(masked[0, 0, 0, 1:]).all() and torch.isfinite(masked[0, 0, 2]).all()
    weights = rec.get("weights")
    assert torch.allclose(weights.sum(-1), torch.ones(1, 1, 3, dtype=torch.float64))
    expected = torch.softmax((scores / 2).masked_fill(~mask, float("-inf")), -1)
    assert torch.allclose(weights, expected, atol=1e-12)
    assert torch.equal(rec.get("output"), out)


def test_causal_mask_with_offset_and_sliding_window():
    mask = causal_mask(3, 7, sliding_window=4)
    for i in range(3):
        position = 4 + i
        for j in range(7):
            assert mask[i, j].item() == (position - 4 < j <= position)


def test_positions_from_attention_mask_skip_left_padding():
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 0]])
    positions = positions_from_attention_mask(mask)
    assert positions[0, 2:].tolist() == [0, 1, 2]
    assert positions[1, :4].tolist() == [0, 1, 2, 3]


def _copy_from_torch_mha(ours: MultiHeadAttention, ref: nn.MultiheadAttention, d: int) -> None:
    with torch.no_grad():
        if ref._qkv_same_embed_dim:
            wq, wk, wv = ref.in_proj_weight.split(d)
        else:
            wq, wk, wv = ref.q_proj_weight, ref.k_proj_weight, ref.v_proj_weight
        bq, bk, bv = ref.in_proj_bias.split(d)
        for proj, w, b in ((ours.q_proj, wq, bq), (ours.k_proj, wk, bk), (ours.v_proj, wv, bv)):
            proj.weight.copy_(w)
            proj.bias.copy_(b)
        ours.o_proj.weight.copy_(ref.out_proj.weight)
        ours.o_proj.bias.copy_(ref.out_proj.bias)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("use_sdpa", [False, True])
def test_self_attention_module_matches_torch_multihead(dtype, use_sdpa):
    torch.manual_seed(5)
    d, heads = 32, 4
    ref = nn.MultiheadAttention(d, heads, batch_first=True, dtype=dtype).eval()
    ours = MultiHeadAttention(d, heads, qkv_bias=True, out_bias=True, use_sdpa=use_sdpa).to(dtype)
    _copy_from_torch_mha(ours, ref, d)
    x = torch.randn(2, 6, d, dtype=dtype)
    key_padding = torch.tensor([[1] * 6, [1, 1, 1, 1, 0, 0]])
    mask = combine_masks(causal_mask(6), padding_mask(key_padding))
    with torch.no_grad():
        expected, _ = ref(x, x, x, attn_mask=~causal_mask(6), key_padding_mask=key_padding == 0)
        got = ours(x, mask=mask)
        plain_expected, _ = ref(x, x, x, attn_mask=~causal_mask(6))
        plain_got = ours(x, causal=True)
    assert (got - expected).abs().max() < TOL[dtype]
    assert (plain_got - plain_expected).abs().max() < TOL[dtype]


@pytest.mark.parametrize("use_sdpa", [False, True])
def test_cross_attention_matches_torch_multihead(use_sdpa):
    torch.manual_seed(6)
    d, kv_dim, heads = 24, 40, 3
    ref = nn.MultiheadAttention(d, heads, kdim=kv_dim, vdim=kv_dim, batch_first=True).double()
    ours = MultiHeadAttention(d, heads, qkv_bias=True, out_bias=True, kv_dim=kv_dim)
    ours = ours.double()
    ours.use_sdpa = use_sdpa
    _copy_from_torch_mha(ours, ref, d)
    x = torch.randn(2, 4, d, dtype=torch.float64)
    memory = torch.randn(2, 9, kv_dim, dtype=torch.float64)
    memory_padding = torch.ones(2, 9, dtype=torch.long)
    memory_padding[0, 7:] = 0
    with torch.no_grad():
        expected, _ = ref(x, memory, memory, key_padding_mask=memory_padding == 0)
        got = ours(x, memory, mask=padding_mask(memory_padding))
    assert (got - expected).abs().max() < 1e-12


@pytest.mark.parametrize("n_kv_heads", [8, 4, 2, 1])  # MHA, GQA, GQA, MQA
@pytest.mark.parametrize("use_sdpa", [False, True])
def test_grouped_query_attention_matches_torch_gqa(n_kv_heads, use_sdpa):
    torch.manual_seed(7)
    d, heads, head_dim = 32, 8, 6
    ours = MultiHeadAttention(d, heads, n_kv_heads, head_dim, use_sdpa=use_sdpa).double()
    x = torch.randn(2, 5, d, dtype=torch.float64)
    with torch.no_grad():
        got = ours(x, causal=True)
        q = F.linear(x, ours.q_proj.weight).view(2, 5, heads, head_dim).transpose(1, 2)
        k = F.linear(x, ours.k_proj.weight).view(2, 5, n_kv_heads, head_dim).transpose(1, 2)
        v = F.linear(x, ours.v_proj.weight).view(2, 5, n_kv_heads, head_dim).transpose(1, 2)
        attended = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        expected = F.linear(
            attended.transpose(1, 2).reshape(2, 5, heads * head_dim), ours.o_proj.weight
        )
    assert (got - expected).abs().max() < 1e-12
    assert ours.k_proj.weight.shape == (n_kv_heads * head_dim, d)


def test_module_records_projections_and_steps():
    torch.manual_seed(8)
    ours = MultiHeadAttention(16, 2)
    with recording() as rec:
        ours(torch.randn(1, 3, 16), causal=True)
    names = rec.names()
    for step in ("q", "k", "v", "scores", "scaled_scores", "masked_scores", "weights", "output"):
        assert step in names
    assert rec.get("q").shape == (1, 2, 3, 8)
    assert rec.get("weights").shape == (1, 2, 3, 3)


def test_batch_chunked_scratch_attention_equals_one_piece(monkeypatch):
    """The module's scratch path splits big batches into chunks; values and gradients agree."""
    import llm_internals.layers.multihead as multihead

    torch.manual_seed(9)
    ours = MultiHeadAttention(16, 4, 2).double()
    x = torch.randn(5, 6, 16, dtype=torch.float64)
    key_padding = torch.ones(5, 6, dtype=torch.long)
    key_padding[1, :2] = 0
    key_padding[4, 5:] = 0
    results = []
    for budget in (2**40, 4 * 6 * 6 * 8 * 2):  # one piece; two batch rows per chunk
        monkeypatch.setattr(multihead, "SCORES_CHUNK_BYTES", budget)
        for mask in (None, combine_masks(causal_mask(6), padding_mask(key_padding))):
            ours.zero_grad()
            out = ours(x, mask=mask, causal=True)
            out.square().sum().backward()
            results.append((out.detach(), ours.q_proj.weight.grad.clone()))
    for (out_a, grad_a), (out_b, grad_b) in zip(results[:2], results[2:], strict=True):
        assert (out_a - out_b).abs().max() < 1e-12
        assert (grad_a - grad_b).abs().max() < 1e-12


@pytest.mark.parametrize("shape", [(7, 8), (3, 2, 4, 7, 8)])
def test_any_leading_dims_match_torch(shape):
    g = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(shape, generator=g) for _ in range(3))
    mask = torch.ones(shape[-2], shape[-2], dtype=torch.bool).tril()
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert (scaled_dot_product_attention(q, k, v, mask) - ref).abs().max() < 1e-5
    assert (sdpa_attention(q, k, v, mask) - ref).abs().max() < 1e-5
