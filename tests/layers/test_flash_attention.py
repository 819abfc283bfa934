"""The tiled flash attention (layers/flash_attention.py) against the materialised formula with
autograd, torch's scaled_dot_product_attention and torch.autograd.gradcheck: forward, L and
dQ, dK, dV on random shapes (hypothesis: leading dims, GQA, N_q != N_k, ragged N, block sizes
1 and > N, causal, padding and full masks, both loop orders)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from llm_internals.layers.flash_attention import flash_attention, flash_attention_forward

from .flash_reference import materialised, random_qkv, rel_err

TOL = {torch.float64: 1e-10, torch.float32: 1e-5}


@st.composite
def attention_case(draw):
    """Shapes and options: (B, H, N, d) with H a multiple of kv heads, or plain leading dims."""
    n_q = draw(st.integers(1, 12))
    n_k = draw(st.integers(1, 14))
    d = draw(st.integers(1, 8))
    if draw(st.booleans()):  # (batch, heads, N, d), maybe grouped
        batch, kv_heads, group = (
            draw(st.integers(1, 2)),
            draw(st.integers(1, 2)),
            draw(st.integers(1, 3)),
        )
        shape_q, shape_k = (batch, kv_heads * group, n_q, d), (batch, kv_heads, n_k, d)
    else:  # any leading dims, same for q and k
        lead = tuple(draw(st.lists(st.integers(1, 3), max_size=2)))
        shape_q, shape_k = (*lead, n_q, d), (*lead, n_k, d)
    mask_kind = draw(st.sampled_from(["none", "padding", "full"]))
    mask = None
    if mask_kind != "none":
        g = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
        if mask_kind == "padding" or len(shape_q) < 3:  # (batch, 1, 1, N_k)-like: keys only
            mask = (
                torch.rand(*shape_q[:-3], *([1] * min(2, len(shape_q) - 1)), n_k, generator=g) > 0.3
            )
        else:
            mask = torch.rand(*shape_q[:-1], n_k, generator=g) > 0.3
    return dict(
        shape_q=shape_q,
        shape_k=shape_k,
        d_v=draw(st.sampled_from([None, d + 2])),
        causal=draw(st.booleans()),
        mask=mask,
        block_q=draw(st.sampled_from([1, 2, 3, 5, 16])),
        block_k=draw(st.sampled_from([1, 2, 4, 7, 16])),
        loop_order=draw(st.sampled_from(["fa2", "fa1"])),
        scale=draw(st.sampled_from([None, 0.3])),
    )


def _check_against_materialised(case, dtype):
    q, k, v = random_qkv(case["shape_q"], case["shape_k"], case["d_v"], dtype=dtype)
    options = dict(causal=case["causal"], mask=case["mask"], scale=case["scale"])
    blocks = dict(block_q=case["block_q"], block_k=case["block_k"], loop_order=case["loop_order"])
    out = flash_attention(q, k, v, **options, **blocks)
    out_only, lse = flash_attention_forward(q, k, v, **options, **blocks)
    ref, ref_lse = materialised(q, k, v, **options)
    grad_out = torch.randn_like(ref)
    grads = torch.autograd.grad((out * grad_out).sum(), (q, k, v))
    ref_grads = torch.autograd.grad((ref * grad_out).sum(), (q, k, v))
    tol = TOL[dtype]
    assert rel_err(out, ref) < tol
    assert torch.equal(out_only, out.detach())
    assert lse.shape == q.shape[:-1]
    finite = torch.isfinite(ref_lse)
    assert torch.equal(torch.isfinite(lse), finite)  # rows with no visible key: -inf both
    assert (lse[~finite] == float("-inf")).all()
    if finite.any():
        assert rel_err(lse[finite], ref_lse[finite]) < tol
    for name, ours, theirs in zip("qkv", grads, ref_grads, strict=True):
        assert ours.shape == theirs.shape, name
        assert rel_err(ours, theirs) < tol, name


@settings(max_examples=60, deadline=None)
@given(case=attention_case())
def test_fp64_matches_materialised_attention_and_autograd(case):
    _check_against_materialised(case, torch.float64)


@settings(max_examples=25, deadline=None)
@given(case=attention_case())
def test_fp32_matches_materialised_attention_and_autograd(case):
    _check_against_materialised(case, torch.float32)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("kv_heads", [4, 2, 1])
def test_matches_torch_sdpa(causal, kv_heads):
    """torch's own kernel (is_causal, enable_gqa) on a square ragged shape, fp32."""
    q, k, v = random_qkv((2, 4, 37, 16), (2, kv_heads, 37, 16), dtype=torch.float32, seed=1)
    ours = flash_attention(q, k, v, causal=causal, block_q=8, block_k=5)
    ref = F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=kv_heads != 4)
    assert rel_err(ours, ref) < 1e-5
    ours.sum().backward()
    grads = [x.grad.clone() for x in (q, k, v)]
    for x in (q, k, v):
        x.grad = None
    ref.sum().backward()
    for ours_grad, x in zip(grads, (q, k, v), strict=True):
        assert rel_err(ours_grad, x.grad) < 1e-5


@pytest.mark.parametrize(
    "shape_q, shape_k, causal, masked",
    [
        ((1, 2, 5, 3), (1, 2, 5, 3), False, False),
        ((1, 2, 5, 3), (1, 2, 5, 3), True, False),
        ((1, 4, 3, 3), (1, 2, 6, 3), True, True),  # GQA, queries at an offset, padding
        ((3, 4, 2), (3, 5, 2), True, False),  # no heads dim, N_q < N_k
    ],
)
def test_gradcheck_fp64(shape_q, shape_k, causal, masked):
    q, k, v = random_qkv(shape_q, shape_k, dtype=torch.float64, seed=2)
    mask = None
    if masked:
        mask = torch.ones(shape_q[0], 1, 1, shape_k[-2], dtype=torch.bool)
        mask[0, ..., :2] = False
    fn = lambda q, k, v: flash_attention(q, k, v, causal=causal, mask=mask, block_q=2, block_k=2)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (q, k, v))


@pytest.mark.parametrize(
    "mask_shape",
    [(6, 9), (2, 1, 1, 9), (2, 1, 6, 9), (2, 4, 6, 9), (1, 4, 1, 9), (2, 4, 6, 1)],
)
@pytest.mark.parametrize("kv_heads", [4, 2])
def test_every_mask_shape_with_and_without_groups(mask_shape, kv_heads):
    """Each way a mask can broadcast (per key, per query, per head, per batch row) against
    4 query heads on 4 or 2 K/V heads, causal, ragged 4 x 4 tiles; fp64 forward and gradients."""
    q, k, v = random_qkv((2, 4, 6, 3), (2, kv_heads, 9, 3), seed=8)
    mask = torch.rand(mask_shape, generator=torch.Generator().manual_seed(9)) > 0.3
    out = flash_attention(q, k, v, causal=True, mask=mask, block_q=4, block_k=4)
    ref, _ = materialised(q, k, v, causal=True, mask=mask)
    assert rel_err(out, ref) < 1e-10
    grad_out = torch.randn_like(ref)
    ours = torch.autograd.grad((out * grad_out).sum(), (q, k, v))
    theirs = torch.autograd.grad((ref * grad_out).sum(), (q, k, v))
    for name, a, b in zip("qkv", ours, theirs, strict=True):
        assert rel_err(a, b) < 1e-10, name


def test_fa1_equals_fa2():
    q, k, v = random_qkv((2, 6, 29, 8), (2, 3, 41, 8), dtype=torch.float64, seed=3)
    mask = torch.rand(2, 1, 29, 41, generator=torch.Generator().manual_seed(0)) > 0.2
    outs = [
        flash_attention_forward(
            q, k, v, causal=True, mask=mask, block_q=6, block_k=9, loop_order=order
        )
        for order in ("fa2", "fa1")
    ]
    (out2, lse2), (out1, lse1) = outs
    assert (out1 - out2).abs().max() < 1e-13
    finite = torch.isfinite(lse2)
    assert torch.equal(finite, torch.isfinite(lse1))
    assert (lse1[finite] - lse2[finite]).abs().max() < 1e-13


def test_bf16_is_the_fp32_result_rounded():
    """bf16 in, fp32 arithmetic: O differs from the fp32 reference (on the same bf16 inputs) by
    at most bf16's rounding of O (2^-8 relative) plus fp32 noise; L stays fp32 and matches to
    1e-5. Gradients: dO and the saved O are bf16, so D = rowsum(dO * O) carries O's rounding;
    bound 2^-6 of the largest gradient (measured: ~2^-8)."""
    q, k, v = random_qkv((2, 4, 33, 16), (2, 2, 33, 16), dtype=torch.bfloat16, seed=4)
    out, lse = flash_attention_forward(q, k, v, causal=True, block_q=8, block_k=8)
    assert out.dtype == torch.bfloat16 and lse.dtype == torch.float32
    q32, k32, v32 = (x.detach().float().requires_grad_() for x in (q, k, v))
    ref, ref_lse = materialised(q32, k32, v32, causal=True)
    assert ((out.float() - ref).abs() <= 2**-8 * ref.abs() + 1e-5).all()
    assert rel_err(lse, ref_lse) < 1e-5
    grad_out = torch.randn(ref.shape, generator=torch.Generator().manual_seed(5))
    flash_attention(q, k, v, causal=True, block_q=8, block_k=8).backward(grad_out.bfloat16())
    ref.backward(grad_out.bfloat16().float())
    for x, x32 in zip((q, k, v), (q32, k32, v32), strict=True):
        assert x.grad.dtype == torch.bfloat16
        assert rel_err(x.grad, x32.grad) < 2**-6


def test_rows_without_a_visible_key_give_zero_output_and_gradient():
    q, k, v = random_qkv((1, 2, 4, 3), (1, 2, 6, 3), dtype=torch.float64, seed=6)
    mask = torch.ones(1, 2, 4, 6, dtype=torch.bool)
    mask[0, 1, 2] = False  # head 1, query 2 sees nothing
    out, lse = flash_attention_forward(q, k, v, mask=mask, block_k=4)
    assert (out[0, 1, 2] == 0).all() and lse[0, 1, 2] == float("-inf")
    assert torch.isfinite(lse[0, 0]).all()
    flash_attention(q, k, v, mask=mask, block_k=4).sum().backward()
    assert (q.grad[0, 1, 2] == 0).all()
    assert all(torch.isfinite(x.grad).all() for x in (q, k, v))


@pytest.mark.parametrize("n_q, n_k, batch", [(0, 5, 2), (5, 0, 2), (3, 4, 0)])
def test_empty_sizes(n_q, n_k, batch):
    """No queries, no keys (every row sees nothing: O = 0, L = -inf) or an empty batch."""
    q, k, v = random_qkv((batch, 2, n_q, 4), (batch, 1, n_k, 4))
    out, lse = flash_attention_forward(q, k, v, causal=True)
    ref, ref_lse = materialised(q, k, v, causal=True)
    assert out.shape == ref.shape and torch.equal(out, ref) and torch.equal(lse, ref_lse)
    flash_attention(q, k, v, causal=True).sum().backward()
    assert all(x.grad.shape == x.shape and not x.grad.any() for x in (q, k, v))


@pytest.mark.cuda
def test_runs_on_cuda_like_on_cpu():
    """The PyTorch loops (not the Triton kernel, which CUDA tensors get by default) on a GPU."""
    case = dict(causal=True, block_q=16, block_k=32, use_triton=False)
    q, k, v = random_qkv((2, 8, 100, 32), (2, 2, 130, 32), dtype=torch.float32, device="cuda")
    out = flash_attention(q, k, v, **case)
    out.sum().backward()
    cpu = [x.detach().cpu().requires_grad_() for x in (q, k, v)]
    ref, _ = materialised(*cpu, causal=True)
    ref.sum().backward()
    assert out.device.type == "cuda"
    assert rel_err(out.cpu(), ref) < 1e-4
    for x, x_cpu in zip((q, k, v), cpu, strict=True):
        assert rel_err(x.grad.cpu(), x_cpu.grad) < 1e-4
