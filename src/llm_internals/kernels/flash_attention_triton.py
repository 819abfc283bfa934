"""Flash attention as Triton kernels (FA2: flash_attention_triton_kernels.py), behind the same
contract as the PyTorch reference llm_internals.layers.flash_attention:

    out = triton_flash_attention(q, k, v, causal=True)               # differentiable
    out, lse = triton_flash_attention_forward(q, k, v, causal=True)  # forward only, with L

q (..., N_q, d), k and v (..., N_k, d) with the same leading dims, or fewer K/V heads in dim -3
(GQA); N_q < N_k puts the queries at the last N_q positions. O comes back in q's dtype, L in
fp32. Supported: fp16, bf16 and fp32 (accumulating in fp32; fp32 dot products in full IEEE
precision, not TF32), head_dim <= 256 with d_v = d, no padding mask: anything else raises an
LLMInternalsError saying why (`unsupported_reason` in llm_internals.kernels, which the PyTorch
path asks first so that it falls back instead).

Runs on CUDA tensors, or on CPU tensors under Triton's interpreter (TRITON_INTERPRET=1 set before
this module is imported: the tests do that on a machine without a GPU). Importing this module
imports triton; nothing in the base package does so on the CPU.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch

from llm_internals.errors import LLMInternalsError
from llm_internals.kernels import unsupported_reason
from llm_internals.kernels.flash_attention_triton_kernels import (
    delta_kernel,
    dkdv_kernel,
    dq_kernel,
    forward_kernel,
    triton,
)
from llm_internals.layers.flash_attention import check_inputs

LOG2E = 1.4426950408889634


@dataclass(frozen=True)
class Blocks:
    """Tile sizes (powers of 2, >= 16 for tl.dot) and launch settings of one kernel."""

    m: int  # query rows per tile
    n: int  # key rows per tile
    warps: int = 4
    stages: int = 2


def default_blocks(head_dim: int, dtype: torch.dtype) -> tuple[Blocks, Blocks]:
    """(forward, backward) tiles for a GPU, after the Triton tutorial's configurations, smaller
    for wide heads (the fp32 accumulators dK, dV are 2 x n x d) and for fp32 (IEEE products run
    on FMA units and stage more in shared memory). Shared memory per program, from
    triton.compile for sm_90 (forward / dK,dV): fp16/bf16 d 64: 24 / 33 KiB, d 128: 48 / 65 KiB,
    d 256: 48 / 72 KiB; fp32 d 128: 72 / 68 KiB, d 256: 100 / 65 KiB (an A100 has 163 KiB)."""
    if dtype == torch.float32:
        if head_dim <= 128:
            return Blocks(64, 32, warps=4, stages=2), Blocks(32, 32, warps=4, stages=2)
        return Blocks(32, 32, warps=4, stages=2), Blocks(16, 16, warps=4, stages=1)
    if head_dim <= 64:
        return Blocks(128, 64, warps=4, stages=3), Blocks(64, 64, warps=4, stages=2)
    if head_dim <= 128:
        return Blocks(128, 64, warps=8, stages=3), Blocks(64, 64, warps=8, stages=2)
    return Blocks(64, 32, warps=4, stages=2), Blocks(32, 32, warps=4, stages=1)


@dataclass(frozen=True)
class Problem:
    """What the kernels need besides the tensors, which go flat: (batch * heads, N, d)."""

    batch: int
    heads: int
    kv_heads: int
    n_q: int
    n_k: int
    head_dim: int
    causal: bool
    scale: float
    precision: str  # of tl.dot: "ieee" for fp32 (exact products, not TF32)

    def grid(self, rows: int, block: int, heads: int) -> tuple[int, int]:
        """One program per tile of `rows` and per (batch, head)."""
        return triton.cdiv(rows, block), self.batch * heads

    def common(self) -> dict:
        """The arguments every kernel but delta_kernel takes after its pointers."""
        return dict(n_q=self.n_q, n_k=self.n_k, offset=self.n_k - self.n_q, heads=self.heads,
                    kv_heads=self.kv_heads, HEAD_DIM=self.head_dim,
                    BLOCK_D=max(16, triton.next_power_of_2(self.head_dim)), CAUSAL=self.causal,
                    PRECISION=self.precision)  # fmt: skip


def _problem(q, k, v, causal: bool, scale: float | None) -> Problem:
    check_inputs(q, k, v, None, 1, 1, "fa2")  # shapes, heads, dtypes, devices: the same errors
    reason = unsupported_reason(q, k, v)
    if reason is not None:
        raise LLMInternalsError(
            f"the Triton flash-attention kernel cannot run this input: {reason}",
            hint="use the PyTorch flash attention (it falls back by itself unless use_triton=True)",
        )
    heads = q.shape[-3] if q.dim() >= 3 else 1
    d = q.shape[-1]
    return Problem(
        batch=q.numel() // (heads * q.shape[-2] * d) if q.numel() else 0, heads=heads,
        kv_heads=k.shape[-3] if k.dim() >= 3 else 1, n_q=q.shape[-2], n_k=k.shape[-2],
        head_dim=d, causal=bool(causal),
        scale=1.0 / math.sqrt(d) if scale is None else float(scale),
        precision="ieee" if q.dtype == torch.float32 else "tf32",  # "tf32": the default
    )  # fmt: skip


def _flat(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(-1, x.shape[-2], x.shape[-1]).contiguous()


def _on(device: torch.device):
    """Triton launches on the current CUDA device: make it the tensors' (cuda:1 and so on)."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def _forward(p: Problem, q, k, v, blocks: Blocks) -> tuple[torch.Tensor, torch.Tensor]:
    out = torch.empty_like(q)
    lse = torch.empty(q.shape[:-1], device=q.device, dtype=torch.float32)
    with _on(q.device):
        forward_kernel[p.grid(p.n_q, blocks.m, p.heads)](
            q, k, v, out, lse, p.scale * LOG2E, **p.common(), BLOCK_M=blocks.m,
            BLOCK_N=blocks.n, num_warps=blocks.warps, num_stages=blocks.stages,
        )  # fmt: skip
    return out, lse


def _backward(p: Problem, q, k, v, out, lse, dout, blocks: Blocks):
    delta = torch.empty_like(lse)
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    common = p.common()
    launch = dict(scale=p.scale, qk_scale=p.scale * LOG2E, **common, BLOCK_M=blocks.m,
                  BLOCK_N=blocks.n, num_warps=blocks.warps, num_stages=blocks.stages)  # fmt: skip
    with _on(q.device):
        delta_kernel[p.grid(p.n_q, blocks.m, p.heads)](
            out, dout, delta, p.n_q, HEAD_DIM=p.head_dim, BLOCK_D=common["BLOCK_D"],
            BLOCK_M=blocks.m,
        )  # fmt: skip
        dkdv_kernel[p.grid(p.n_k, blocks.n, p.kv_heads)](
            q, k, v, dout, lse, delta, dk, dv, **launch
        )
        dq_kernel[p.grid(p.n_q, blocks.m, p.heads)](q, k, v, dout, lse, delta, dq, **launch)
    return dq, dk, dv


def _blocks(
    head_dim: int, dtype: torch.dtype, block_m: int | None, block_n: int | None
) -> tuple[Blocks, Blocks]:
    """Default GPU tiles, or the caller's (tests use 16 x 16 so small inputs span several)."""
    forward, backward = default_blocks(head_dim, dtype)
    if block_m is None and block_n is None:
        return forward, backward
    for name, size in (("block_m", block_m), ("block_n", block_n)):
        if size is not None and (size < 16 or size & (size - 1)):
            raise LLMInternalsError(f"Triton flash attention: {name} must be a power of 2 >= 16, "
                                    f"got {size}")  # fmt: skip
    pick = lambda b: Blocks(block_m or b.m, block_n or b.n, b.warps, b.stages)  # noqa: E731
    return pick(forward), pick(backward)


def triton_flash_attention_forward(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool = False,
    scale: float | None = None,
    block_m: int | None = None,
    block_n: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(O in q's dtype and shape, L in fp32 of shape q.shape[:-1]); no autograd graph."""
    p = _problem(q, k, v, causal, scale)
    blocks = _blocks(p.head_dim, q.dtype, block_m, block_n)[0]
    out, lse = _forward(p, _flat(q.detach()), _flat(k.detach()), _flat(v.detach()), blocks)
    return out.reshape(q.shape), lse.reshape(q.shape[:-1])


class TritonFlashAttention(torch.autograd.Function):
    """Forward saves the flattened q, k, v, O and L; backward runs the three backward kernels."""

    @staticmethod
    def forward(ctx, q, k, v, causal, scale, block_m, block_n):
        p = _problem(q, k, v, causal, scale)
        forward_blocks, ctx.blocks = _blocks(p.head_dim, q.dtype, block_m, block_n)
        flat = _flat(q), _flat(k), _flat(v)
        out, lse = _forward(p, *flat, forward_blocks)
        ctx.save_for_backward(*flat, out, lse)
        ctx.problem, ctx.shapes = p, (q.shape, k.shape, v.shape)
        return out.reshape(q.shape)

    @staticmethod
    def backward(ctx, dout):
        q, k, v, out, lse = ctx.saved_tensors
        dout = dout.reshape(out.shape).contiguous()
        grads = _backward(ctx.problem, q, k, v, out, lse, dout, ctx.blocks)
        shaped = (grad.reshape(shape) for grad, shape in zip(grads, ctx.shapes, strict=True))
        return *shaped, None, None, None, None


def triton_flash_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool = False,
    scale: float | None = None,
    block_m: int | None = None,
    block_n: int | None = None,
) -> torch.Tensor:
    """softmax(q k^T * scale (+ causal mask)) v by the Triton kernels; differentiable in q, k, v."""
    return TritonFlashAttention.apply(q, k, v, causal, scale, block_m, block_n)
