"""The Triton flash-attention kernel against the materialised formula (autograd gives its
gradients) and against the PyTorch flash attention (llm_internals.layers.flash_attention).

Without a GPU the kernels run in Triton's interpreter on CPU tensors (conftest.py; numpy
underneath, so slow: tiny shapes with 16 x 16 tiles, so every input spans several tiles and
ends in a ragged one). With a GPU the same tests run compiled, on CUDA. The interpreter cannot
check bfloat16 (its tl.dot multiplies the raw 16-bit patterns as integers, triton 3.7 and 3.9),
so bf16, the default GPU tiles and long sequences are `cuda` tests (scripts/gpu_check.sh).
"""

from __future__ import annotations

import builtins
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from llm_internals.errors import LLMInternalsError
from llm_internals.kernels import unsupported_reason
from llm_internals.layers.flash_attention import flash_attention, flash_attention_forward

from ..layers.flash_reference import materialised, random_qkv, rel_err

# Triton ships wheels for Linux only (the dev extras install it there); elsewhere there is no
# Triton to test. On Linux a missing triton is an error here, not a skip.
pytestmark = pytest.mark.skipif(
    sys.platform != "linux", reason="Triton ships wheels for Linux only"
)
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
TILES = dict(block_m=16, block_n=16)

# (q shape, k shape, causal, scale): each spans several 16-row tiles with a ragged last one.
CASES = {
    "gqa causal": ((1, 2, 33, 16), (1, 1, 33, 16), True, None),  # 33 = 2 tiles of 16 + 1 row
    "gqa": ((1, 2, 33, 16), (1, 1, 33, 16), False, None),
    # chunked prefill: the 12 queries are the last 12 of 40 positions; head dim 24 (tile 32);
    # 4 query heads on 2 K/V heads, then 2 batch rows: the (batch, head) -> K/V head map
    "offset causal": ((1, 4, 12, 24), (1, 2, 40, 24), True, 0.3),
    "offset": ((2, 2, 12, 24), (2, 1, 40, 24), False, 0.3),
    # more queries than keys: causal rows 0..15 see no key (O = 0, L = -inf, zero gradients)
    "no key": ((1, 1, 36, 16), (1, 1, 20, 16), True, None),
}


def _grads(out, inputs, dout):
    return torch.autograd.grad(out, inputs, dout)


def _assert_lse_close(lse, ref_lse, tol):
    """Same rows at -inf (no visible key), the rest within `tol` relative."""
    assert torch.equal(lse.isneginf(), ref_lse.isneginf())
    finite = ~ref_lse.isneginf()
    assert rel_err(lse[finite], ref_lse[finite]) < tol


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_fp32_matches_the_materialised_formula_and_autograd(kernel, case):
    shape_q, shape_k, causal, scale = case
    q, k, v = random_qkv(shape_q, shape_k, dtype=torch.float32, device=DEVICE)
    out, lse = kernel.triton_flash_attention_forward(q, k, v, causal=causal, scale=scale, **TILES)
    out_grad = kernel.triton_flash_attention(q, k, v, causal=causal, scale=scale, **TILES)
    dout = torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(DEVICE)
    grads = _grads(out_grad, (q, k, v), dout)

    exact = [x.detach().double().requires_grad_() for x in (q, k, v)]
    ref, ref_lse = materialised(*exact, causal=causal, scale=scale)
    ref_grads = _grads(ref, exact, dout.double())
    assert out.dtype == torch.float32 and lse.dtype == torch.float32 and lse.shape == ref_lse.shape
    assert torch.equal(out, out_grad)
    assert rel_err(out, ref) < 1e-5
    _assert_lse_close(lse, ref_lse, 1e-5)
    for name, grad, ref_grad in zip("qkv", grads, ref_grads, strict=True):
        assert grad.shape == ref_grad.shape, name
        assert rel_err(grad, ref_grad) < 1e-5, name


def test_equals_the_pytorch_flash_attention(kernel):
    """Same O, L and gradients as llm_internals.layers.flash_attention in fp32, via its own
    switch (use_triton=False), on GQA with an offset."""
    shape_q, shape_k, causal, scale = CASES["offset causal"]
    q, k, v = random_qkv(shape_q, shape_k, dtype=torch.float32, device=DEVICE, seed=2)
    out = kernel.triton_flash_attention(q, k, v, causal=causal, scale=scale, **TILES)
    torch_out = flash_attention(q, k, v, causal=causal, scale=scale, use_triton=False)
    dout = torch.randn_like(out)
    for name, a, b in zip("qkv", _grads(out, (q, k, v), dout), _grads(torch_out, (q, k, v), dout),
                          strict=True):  # fmt: skip
        assert rel_err(a, b) < 1e-5, name
    assert rel_err(out, torch_out) < 1e-5
    _, lse = kernel.triton_flash_attention_forward(q, k, v, causal=causal, scale=scale, **TILES)
    _, torch_lse = flash_attention_forward(q, k, v, causal=causal, scale=scale, use_triton=False)
    _assert_lse_close(lse, torch_lse, 1e-5)


def test_the_pytorch_path_runs_the_kernel_when_asked(kernel, monkeypatch):
    """use_triton=True goes through the kernel (here the interpreter), with the same result."""
    calls = []
    real = kernel.triton_flash_attention
    monkeypatch.setattr(kernel, "triton_flash_attention",
                        lambda *a, **kw: calls.append(1) or real(*a, **kw))  # fmt: skip
    q, k, v = random_qkv((1, 2, 20, 16), (1, 1, 20, 16), dtype=torch.float32, device=DEVICE)
    out = flash_attention(q, k, v, causal=True, use_triton=True)
    assert calls == [1]
    assert rel_err(out, materialised(q, k, v, causal=True)[0]) < 1e-5


def test_fp16_within_the_tutorials_tolerance(kernel):
    """fp16 inputs, fp32 accumulation: O and gradients within the Triton tutorial's atol 1e-2 of
    the exact result for the same fp16 values (P is rounded to fp16 before P V, as on a GPU)."""
    shape_q, shape_k, causal, scale = CASES["gqa causal"]
    q, k, v = random_qkv(shape_q, shape_k, dtype=torch.float16, device=DEVICE)
    out = kernel.triton_flash_attention(q, k, v, causal=causal, scale=scale, **TILES)
    dout = torch.randn_like(out)
    exact = [x.detach().double().requires_grad_() for x in (q, k, v)]
    ref, _ = materialised(*exact, causal=causal, scale=scale)
    assert out.dtype == torch.float16
    assert (out.double() - ref).abs().max() < 1e-2
    grads, ref_grads = _grads(out, (q, k, v), dout), _grads(ref, exact, dout.double())
    for name, grad, ref_grad in zip("qkv", grads, ref_grads, strict=True):
        assert grad.dtype == torch.float16 and (grad.double() - ref_grad).abs().max() < 1e-2, name


@pytest.mark.parametrize("shape_q, shape_k", [((2, 21, 16), (2, 30, 16)), ((21, 16), (30, 16))])
def test_any_leading_dims(kernel, shape_q, shape_k):
    q, k, v = random_qkv(shape_q, shape_k, dtype=torch.float32, device=DEVICE)
    out = kernel.triton_flash_attention(q, k, v, causal=True, **TILES)
    exact = [x.detach().double().requires_grad_() for x in (q, k, v)]
    ref, _ = materialised(*exact, causal=True)
    assert out.shape == ref.shape and rel_err(out, ref) < 1e-5
    dout = torch.randn_like(out)
    for grad, ref_grad in zip(_grads(out, (q, k, v), dout), _grads(ref, exact, dout.double()),
                              strict=True):  # fmt: skip
        assert rel_err(grad, ref_grad) < 1e-5


def test_unsupported_inputs_raise_one_clear_error(kernel):
    q, k, v = random_qkv((1, 4, 8, 16), (1, 3, 8, 16), dtype=torch.float32, device=DEVICE)
    with pytest.raises(LLMInternalsError, match=r"q heads \(4\) must be a multiple of k/v heads"):
        kernel.triton_flash_attention(q, k, v)  # checked before any kernel reads memory
    q, k, v = random_qkv((1, 2, 8, 16), (1, 2, 8, 16), device=DEVICE)  # float64
    with pytest.raises(LLMInternalsError, match="cannot run this input: dtype torch.float64"):
        kernel.triton_flash_attention(q, k, v)
    q, k, v = random_qkv((1, 2, 8, 16), (1, 2, 8, 16), d_v=8, dtype=torch.float32, device=DEVICE)
    with pytest.raises(LLMInternalsError, match="head dims q 16, v 8"):
        kernel.triton_flash_attention_forward(q, k, v)
    q, k, v = random_qkv((1, 2, 8, 16), (1, 2, 8, 16), dtype=torch.float32, device=DEVICE)
    with pytest.raises(LLMInternalsError, match="block_m must be a power of 2 >= 16, got 24"):
        kernel.triton_flash_attention(q, k, v, block_m=24)
    mask = torch.ones(8, 8, dtype=torch.bool, device=DEVICE)
    assert "padding mask" in unsupported_reason(q, k, v, mask)
    with pytest.raises(LLMInternalsError, match="use_triton=True but .*padding mask"):
        flash_attention(q, k, v, mask=mask, use_triton=True)
    # ... and by default the PyTorch path computes it instead
    assert flash_attention(q, k, v, mask=mask).shape == q.shape


def test_cpu_tensors_need_the_interpreter(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    q, k, v = random_qkv((1, 2, 8, 16), (1, 2, 8, 16), dtype=torch.float32)
    assert "need CUDA, or TRITON_INTERPRET=1" in unsupported_reason(q, k, v)
    with pytest.raises(LLMInternalsError, match="use_triton=True but tensors on cpu"):
        flash_attention(q, k, v, use_triton=True)


def test_the_cpu_path_never_imports_triton(monkeypatch):
    """On CPU tensors (no interpreter) flash_attention decides without importing triton or the
    kernel module: every import during the calls is watched."""
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    imported = []
    real_import = builtins.__import__

    def watched(name, globals=None, locals=None, fromlist=(), level=0):
        imported.extend([name, *(f"{name}.{item}" for item in fromlist or ())])
        return real_import(name, globals, locals, fromlist, level)

    q, k, v = random_qkv((1, 2, 8, 16), (1, 2, 8, 16), dtype=torch.float32)
    monkeypatch.setattr(builtins, "__import__", watched)
    flash_attention(q, k, v, causal=True).sum().backward()
    flash_attention_forward(q, k, v)
    monkeypatch.undo()
    assert not [n for n in imported if "triton" in n], imported


# ---- on a GPU: compiled kernels, bf16, the default tiles, long sequences ----------------------


@pytest.mark.cuda
@pytest.mark.parametrize(
    "dtype, head_dim, causal",  # each dtype, head dim and mode once (each compiles 4 kernels)
    [(torch.bfloat16, 64, True), (torch.bfloat16, 128, False), (torch.float16, 128, True),
     (torch.float16, 64, False)],
)  # fmt: skip
def test_half_precision_on_cuda_with_default_tiles(kernel, dtype, head_dim, causal):
    """1000 queries (ragged for every tile size) after 200 cached keys, GQA 8 -> 2, against the
    materialised formula in fp32 on the same values. O and the gradients are rounded to the
    input dtype at the end and P before P V: relative error (to the largest entry) under 1e-2
    in fp16 (10-bit mantissa) and 2e-2 in bf16 (7 bits)."""
    q, k, v = random_qkv((2, 8, 1000, head_dim), (2, 2, 1200, head_dim), dtype=dtype,
                         device="cuda")  # fmt: skip
    out = kernel.triton_flash_attention(q, k, v, causal=causal)
    dout = torch.randn_like(out)
    exact = [x.detach().float().requires_grad_() for x in (q, k, v)]
    ref, _ = materialised(*exact, causal=causal)
    tol = 1e-2 if dtype == torch.float16 else 2e-2
    assert out.dtype == dtype and rel_err(out, ref) < tol
    grads, ref_grads = _grads(out, (q, k, v), dout), _grads(ref, exact, dout.float())
    for name, grad, ref_grad in zip("qkv", grads, ref_grads, strict=True):
        assert grad.dtype == dtype and rel_err(grad, ref_grad) < tol, name


@pytest.mark.cuda
def test_fp32_on_cuda_with_default_tiles_matches_the_pytorch_path(kernel):
    q, k, v = random_qkv((1, 4, 300, 64), (1, 4, 300, 64), dtype=torch.float32, device="cuda")
    out, lse = kernel.triton_flash_attention_forward(q, k, v, causal=True)
    torch_out, torch_lse = flash_attention_forward(q, k, v, causal=True, use_triton=False)
    assert rel_err(out, torch_out) < 1e-5  # IEEE fp32 dot products, not TF32
    _assert_lse_close(lse, torch_lse, 1e-5)


@pytest.mark.cuda
def test_matches_torch_sdpa_on_cuda_and_is_the_default_there(kernel, monkeypatch):
    calls = []
    real = kernel.triton_flash_attention
    monkeypatch.setattr(kernel, "triton_flash_attention",
                        lambda *a, **kw: calls.append(1) or real(*a, **kw))  # fmt: skip
    q, k, v = random_qkv((1, 8, 2048, 128), (1, 8, 2048, 128), dtype=torch.float16, device="cuda")
    out = flash_attention(q, k, v, causal=True)  # auto: CUDA and supported, so the kernel
    assert calls == [1]
    assert (out - F.scaled_dot_product_attention(q, k, v, is_causal=True)).abs().max() < 1e-2


def test_the_kernels_compile_for_a_gpu(tmp_path):
    """The whole compiler pipeline, no GPU needed (compile_for_gpu.py, in a fresh process with
    its own cache): a jit helper with a return after a constexpr branch ran in the interpreter
    but failed here. bf16 (which the interpreter cannot run), causal, head dim 24 in 32 lanes."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path)
    done = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("compile_for_gpu.py")), "--dtype", "bf16",
         "--head-dim", "24", "--block-m", "16", "--block-n", "16", "--causal"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    shared = json.loads(done.stdout)
    assert set(shared) == {"forward_kernel", "delta_kernel", "dkdv_kernel", "dq_kernel"}
    assert all(0 < size < 227 * 1024 for size in shared.values()), shared
