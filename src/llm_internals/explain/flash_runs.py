"""The measured runs of the `flash-attention` lesson: seeded inputs, the bytes autograd keeps
for a backward pass, best-of-n wall-clock timing of the materialised steps, and the block
pairs the real tiled loops count.

Every number comes from running the library's attention (layers/attention.py) and flash
attention (layers/flash_attention.py); nothing here is a formula standing in for a run.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from llm_internals.layers.attention import scaled_dot_product_attention
from llm_internals.layers.flash_attention import (
    FlashCounters,
    flash_attention,
    flash_attention_forward,
)
from llm_internals.layers.flash_io import PAPER_STANDARD, Tiling, standard_io, tiled_io
from llm_internals.layers.softmax import softmax
from llm_internals.trace import recording


def qkv(n: int, d: int, heads: int = 1, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(1, heads, n, d, generator=g) for _ in range(3))


def saved_bytes(fn, *tensors: torch.Tensor, backward: bool = False) -> int:
    """Bytes of the distinct tensors autograd keeps for the backward pass of fn(*tensors)
    (then runs that backward pass when `backward`)."""
    seen: dict[int, int] = {}

    def pack(x: torch.Tensor) -> torch.Tensor:
        seen[x.untyped_storage().data_ptr()] = x.untyped_storage().nbytes()
        return x

    inputs = [t.detach().requires_grad_() for t in tensors]
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
        out = fn(*inputs)
    if backward:
        out.sum().backward()
    return sum(seen.values())


def best_seconds(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def standard_step_rows(n: int, d: int, repeats: int) -> list[list]:
    """One row per materialised step (Q K^T, softmax, P V): FLOPs, bytes moved (fp32), FLOPs per
    byte, best-of-`repeats` milliseconds on one thread, and GFLOP/s."""
    q, k, v = (x[0, 0] for x in qkv(n, d))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        scores = q @ k.T
        probs = softmax(scores)
        seconds = (best_seconds(lambda: q @ k.T, repeats),
                   best_seconds(lambda: softmax(scores), repeats),
                   best_seconds(lambda: probs @ v, repeats))  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    flops = (2 * n * n * d, 5 * n * n, 2 * n * n * d)  # softmax: max, subtract, exp, sum, divide
    rows = []
    for step, f, s in zip(PAPER_STANDARD, flops, seconds, strict=True):
        moved = standard_io(n, n, d, 4, passes=(step,)).total_bytes
        rows.append([step.name, f, moved, round(f / moved, 2), round(s * 1e3, 3),
                     round(f / s / 1e9, 1)])  # fmt: skip
    return rows


def recomputation_costs(
    n: int, d: int, heads: int, block: int
) -> tuple[dict[str, int], dict[str, int], tuple[int, int]]:
    """Bytes kept for backward and matmul FLOPs of forward + backward, materialised and tiled,
    and the (forward, backward) block pairs the tiled pass computed."""
    q, k, v = qkv(n, d, heads)
    counters = FlashCounters()

    def tiled(*x: torch.Tensor) -> torch.Tensor:
        return flash_attention(*x, block_q=block, block_k=block, counters=counters)

    kept = {"materialised": saved_bytes(scaled_dot_product_attention, q, k, v, backward=True),
            "tiled": saved_bytes(tiled, q, k, v, backward=True)}  # fmt: skip
    pairs = (counters.forward.blocks_computed, counters.backward.blocks_computed)
    per_entry = 2 * d * heads  # FLOPs per output entry of a (. x d) @ (d x .) product, all heads
    flops = {"materialised": per_entry * n * n * (2 + 4),
             "tiled": per_entry * block * block * (2 * pairs[0] + 5 * pairs[1])}  # fmt: skip
    return kept, flops, pairs


def loop_order_bytes(n: int, d: int, heads: int, block: int) -> tuple[list[list], int]:
    """Bytes read and written by the real causal forward loops in FA1 and FA2 order beside the
    IO model's prediction, and the block pairs FA2 computed."""
    q, k, v = qkv(n, d, heads)
    rows, counted = [], {}
    for order in ("fa1", "fa2"):
        counters = FlashCounters()
        with torch.no_grad():
            flash_attention(q, k, v, causal=True, block_q=block, block_k=block,
                            loop_order=order, counters=counters)  # fmt: skip
        model = tiled_io(Tiling(n, n, d, 4, block, block, True, heads), order)
        counted[order] = counters.forward
        rows.append([order, counters.forward.bytes_read, counters.forward.bytes_written,
                     model.read_bytes, model.written_bytes])  # fmt: skip
    return rows, counted["fa2"].blocks_computed


def saved_bytes_curve(sizes: tuple[int, ...], d: int, heads: int, block: int) -> list[list]:
    """Bytes kept for backward, materialised and tiled, at each N, with the factor per step."""

    def tiled(*x: torch.Tensor) -> torch.Tensor:
        return flash_attention(*x, block_q=block, block_k=block)

    rows = []
    for n in sizes:
        q, k, v = qkv(n, d, heads)
        rows.append([n, saved_bytes(scaled_dot_product_attention, q, k, v),
                     saved_bytes(tiled, q, k, v)])  # fmt: skip
    for row, prev in zip(rows[1:], rows[:-1], strict=True):
        row += [round(row[1] / prev[1], 2), round(row[2] / prev[2], 2)]
    rows[0] += ["", ""]
    return rows


def recap_run(n: int, d: int) -> tuple[torch.Tensor, str]:
    """The materialised attention weights of head 0 on seeded inputs, and the output's shape."""
    q, k, v = qkv(n, d)
    with recording() as rec, torch.no_grad():
        scaled_dot_product_attention(q, k, v)
    return rec.get("weights")[0, 0], str(tuple(rec.get("output").shape))


def tiling_run(n: int, d: int, block: int) -> tuple[FlashCounters, list]:
    """The causal tiled pass with square blocks: its counters and the recorded block pairs
    (query block, key block, status)."""
    q, k, v = qkv(n, d)
    counters = FlashCounters()
    with recording() as rec, torch.no_grad():
        flash_attention(q, k, v, causal=True, block_q=block, block_k=block,
                        counters=counters)  # fmt: skip
    return counters, rec.all("flash.pair")


def online_softmax_run(
    scores: tuple[float, ...], v: torch.Tensor, block_size: int
) -> tuple[list[list], torch.Tensor, torch.Tensor]:
    """One query whose scores are `scores` (d = 1, scale 1, so K = S) through the real tiled
    forward with key blocks of `block_size`: per block its scores and the running m and l the
    pass recorded, then the output and the log-sum-exp L."""
    q = torch.ones(1, 1, dtype=torch.float64)
    k = torch.tensor(scores, dtype=torch.float64)[:, None]
    with recording() as rec:
        out, lse = flash_attention_forward(q, k, v, scale=1.0, block_q=1, block_k=block_size)
    rows = []
    for j, (m, l_sum) in enumerate(zip(rec.all("flash.m"), rec.all("flash.l"), strict=True)):
        block = scores[j * block_size : (j + 1) * block_size]
        rows.append([j, ", ".join(f"{s:g}" for s in block), float(m[0]), float(l_sum[0])])
    return rows, out, lse
