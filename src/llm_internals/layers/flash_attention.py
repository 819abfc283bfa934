"""Flash attention in PyTorch: softmax(Q K^T * scale + mask) V, block by block.

The N_q x N_k score matrix is never stored: queries go in blocks of `block_q` positions, keys
and values in blocks of `block_k`; the largest temporary is one (leading dims, block_q,
block_k) block of scores, for all batch rows and heads at once. The forward pass keeps a running
max and sum per row (online softmax, flash_forward.py) and saves only Q, K, V, O and the
log-sum-exp L; the backward pass rebuilds each block of P from Q, K and L (flash_backward.py).

    out = flash_attention(q, k, v, causal=True)              # differentiable
    out, lse = flash_attention_forward(q, k, v, causal=True)  # forward only, with L

Shapes: q (..., N_q, d), k (..., N_k, d), v (..., N_k, d_v) with the same leading dims, or
(batch, heads, N, d) with fewer K/V heads (grouped-query attention: query head h uses K/V head
h // (heads / kv_heads)). When N_q < N_k the queries are the last N_q positions (decode, chunked
prefill): `causal` lets query i see key j <= i + N_k - N_q, as layers/masks.py causal_mask.
`mask` (bool, True = attend) broadcasts to (..., N_q, N_k) and is combined with `causal`.
A query that sees no key gets output 0 and L = -inf (its gradients are 0).
Dtypes: fp32 and fp64 compute in their own precision; bf16/fp16 compute in fp32 and return O in
the input dtype, L in fp32. Under torch.autocast, q, k, v are first cast to the autocast dtype
(as torch's attention kernels are); the loops themselves run with autocast off.

`loop_order` "fa2" (query blocks outside, the default) or "fa1" (key blocks outside, O and the
statistics updated in slow memory); the backward pass always runs key blocks outside.
`counters` (FlashCounters) receives the block pairs computed/skipped and the bytes each loop
moves to and from slow memory (rules in flash_counters.py).
`use_triton`: None (default) runs the Triton kernel (llm_internals.kernels) for CUDA tensors it
supports when triton is installed, in FA2 order with no counters or trace; True requires it
(an error says why it cannot run); False always runs the PyTorch loops here.

Trace records (only while llm_internals.trace is recording; nothing is prepared otherwise):
    flash.pair           (query block i, key block j, "computed" | "skipped"), in loop order
    flash.m, flash.l     running max / running sum of query block i after each computed pair,
                         shape (*q_lead, rows of the block)
    flash.output         O (q layout), flash.lse  L (*q_lead, N_q), at the end of the forward
    flash.D              rowsum(dO * O) in the backward pass
    flash.backward_pair  (i, j) of each computed pair in the backward pass
"""

from __future__ import annotations

import math

import torch
from torch.autograd.function import once_differentiable

from llm_internals.errors import LLMInternalsError
from llm_internals.kernels import unsupported_reason
from llm_internals.layers.flash_backward import backward_kv_outer
from llm_internals.layers.flash_counters import FlashCounters
from llm_internals.layers.flash_forward import forward_fa1, forward_fa2
from llm_internals.layers.flash_tiles import Tiles, make_tiles
from llm_internals.trace import is_recording, record

LOOP_ORDERS = {"fa2": forward_fa2, "fa1": forward_fa1}
HINT = "see the shapes in the docstring of llm_internals.layers.flash_attention"

__all__ = [
    "LOOP_ORDERS",
    "FlashCounters",
    "check_inputs",
    "flash_attention",
    "flash_attention_forward",
]


def _fail(message: str) -> None:
    raise LLMInternalsError(f"flash attention: {message}", hint=HINT)


def check_inputs(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    block_q: int,
    block_k: int,
    loop_order: str,
) -> None:
    """Raise one LLMInternalsError naming the argument (and the shapes) before any work."""
    shapes = f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}"
    for name, x in (("q", q), ("k", k), ("v", v)):
        if x.dim() < 2:
            _fail(f"{name} must have shape (..., N, head_dim), got {name} {tuple(x.shape)}")
    if q.dim() != k.dim() or k.dim() != v.dim():
        _fail(f"q, k, v must have the same number of dims, got {shapes}")
    if q.shape[-1] != k.shape[-1]:
        _fail(f"head_dim of q and k differ: {shapes}")
    if k.shape[:-1] != v.shape[:-1]:
        _fail(f"k and v must match in all but the last dim: k {tuple(k.shape)}, v {tuple(v.shape)}")
    if q.shape[:-2] != k.shape[:-2]:
        same_outer = q.dim() >= 3 and q.shape[:-3] == k.shape[:-3]
        if not same_outer:
            _fail(f"q and k must have the same leading dims (or differ only in heads): {shapes}")
        if q.shape[-3] % k.shape[-3] != 0:
            _fail(
                f"q heads ({q.shape[-3]}) must be a multiple of k/v heads ({k.shape[-3]}): {shapes}"
            )
    if len({q.dtype, k.dtype, v.dtype}) != 1:
        _fail(f"q, k, v dtypes differ: q {q.dtype}, k {k.dtype}, v {v.dtype}")
    if not q.dtype.is_floating_point:
        _fail(f"q, k, v must be floating point, got {q.dtype}")
    if len({q.device, k.device, v.device}) != 1:
        _fail(f"q, k, v are on different devices: q {q.device}, k {k.device}, v {v.device}")
    for name, size in (("block_q", block_q), ("block_k", block_k)):
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            _fail(f"{name} must be an integer >= 1, got {size!r}")
    if loop_order not in LOOP_ORDERS:
        _fail(f"loop_order must be one of {sorted(LOOP_ORDERS)}, got {loop_order!r}")
    if mask is not None:
        scores_shape = (*q.shape[:-1], k.shape[-2])
        if mask.dtype != torch.bool:
            _fail(f"mask must be boolean (True = attend), got {mask.dtype}")
        try:
            fits = torch.broadcast_shapes(mask.shape, scores_shape) == scores_shape
        except RuntimeError:
            fits = False
        if not fits:
            _fail(
                f"mask {tuple(mask.shape)} does not broadcast to the scores "
                f"{tuple(scores_shape)} (q {tuple(q.shape)}, k {tuple(k.shape)})"
            )
        if mask.device != q.device:
            _fail(f"mask is on {mask.device}, q on {q.device}")


def _autocast_inputs(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inside torch.autocast, q, k, v in the autocast dtype, as torch's own attention takes them
    (a bf16-autocast model hands over bf16 v but fp32 q, k from RoPE's fp32 tables)."""
    device = q.device.type
    if not torch.is_autocast_enabled(device):
        return q, k, v
    dtype = torch.get_autocast_dtype(device)
    return q.to(dtype), k.to(dtype), v.to(dtype)


def _use_triton(q, k, v, mask, loop_order, counters, use_triton: bool | None) -> bool:
    """Whether the Triton kernel computes this call (see use_triton in the module doc)."""
    if use_triton is False:
        return False
    reason = unsupported_reason(q, k, v, mask)
    if reason is None and (loop_order != "fa2" or counters is not None or is_recording()):
        reason = "loop_order fa1, counters and trace records exist only in the PyTorch loops"
    if use_triton and reason is not None:
        _fail(f"use_triton=True but {reason}")
    return reason is None and (use_triton or q.device.type == "cuda")


def _forward(
    tiles: Tiles, scale: float, loop_order: str, counters: FlashCounters | None
) -> tuple[torch.Tensor, torch.Tensor]:
    recording = is_recording()
    tiles.counts = counters.forward if counters is not None else None
    with torch.autocast(tiles.q.device.type, enabled=False):  # the loops choose their dtypes
        out, lse = LOOP_ORDERS[loop_order](tiles, tiles.q * scale, recording)
    out, lse = tiles.from_rows(out), tiles.from_rows(lse)
    if recording:
        record("flash.output", out, note="O = A / l per row")
        record("flash.lse", lse, note="L = m + log l per row")
    return out, lse


def flash_attention_forward(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool = False,
    mask: torch.Tensor | None = None,
    scale: float | None = None,
    block_q: int = 64,
    block_k: int = 64,
    loop_order: str = "fa2",
    counters: FlashCounters | None = None,
    use_triton: bool | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(O in q's dtype, L in fp32 or fp64), forward only, no autograd graph through the loops."""
    q, k, v = _autocast_inputs(q, k, v)
    check_inputs(q, k, v, mask, block_q, block_k, loop_order)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    if _use_triton(q, k, v, mask, loop_order, counters, use_triton):
        from llm_internals.kernels import flash_attention_triton as kernel

        return kernel.triton_flash_attention_forward(q, k, v, causal=causal, scale=scale)
    tiles = make_tiles(q.detach(), k.detach(), v.detach(), mask, causal, block_q, block_k)
    out, lse = _forward(tiles, scale, loop_order, counters)
    return out.to(q.dtype), lse


class FlashAttentionFunction(torch.autograd.Function):
    """Forward saves q, k, v, O, L; backward recomputes P block by block."""

    @staticmethod
    def forward(ctx, q, k, v, mask, causal, scale, block_q, block_k, loop_order, counters):
        tiles = make_tiles(q, k, v, mask, causal, block_q, block_k)
        out, lse = _forward(tiles, scale, loop_order, counters)
        out = out.to(q.dtype)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.mask, ctx.causal, ctx.scale = mask, causal, scale
        ctx.blocks, ctx.counters = (block_q, block_k), counters
        return out

    @staticmethod
    @once_differentiable  # the backward loops are not themselves differentiable
    def backward(ctx, dout):
        q, k, v, out, lse = ctx.saved_tensors
        tiles = make_tiles(q, k, v, ctx.mask, ctx.causal, *ctx.blocks)
        tiles.counts = ctx.counters.backward if ctx.counters is not None else None
        dtype = tiles.q.dtype
        with torch.autocast(q.device.type, enabled=False):
            dq, dk, dv = backward_kv_outer(
                tiles,
                tiles.q * ctx.scale,
                ctx.scale,
                tiles.to_rows(out.to(dtype)),
                tiles.to_rows(lse),
                tiles.to_rows(dout.to(dtype)),
                is_recording(),
            )
        dq = tiles.from_rows(dq).to(q.dtype)
        dk = dk.reshape(k.shape).to(k.dtype)
        dv = dv.reshape(v.shape).to(v.dtype)
        return dq, dk, dv, None, None, None, None, None, None, None


def flash_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool = False,
    mask: torch.Tensor | None = None,
    scale: float | None = None,
    block_q: int = 64,
    block_k: int = 64,
    loop_order: str = "fa2",
    counters: FlashCounters | None = None,
    use_triton: bool | None = None,
) -> torch.Tensor:
    """softmax(q k^T * scale + mask) v by tiles; differentiable in q, k and v (see module doc)."""
    q, k, v = _autocast_inputs(q, k, v)
    check_inputs(q, k, v, mask, block_q, block_k, loop_order)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    if _use_triton(q, k, v, mask, loop_order, counters, use_triton):
        from llm_internals.kernels import flash_attention_triton as kernel

        return kernel.triton_flash_attention(q, k, v, causal=causal, scale=scale)
    return FlashAttentionFunction.apply(
        q, k, v, mask, causal, scale, block_q, block_k, loop_order, counters
    )
