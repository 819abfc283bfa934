"""Flash attention on this CPU: peak memory, time and block size, ours against the references.

Claims (issue 13), each measured against the materialised path (`layers.attention.
scaled_dot_product_attention`, the N x N scores written out) and torch SDPA (its own fused CPU
flash kernel) in the same run, d 64, 8 heads, batch 1, fp32, not causal unless --causal:
1. Memory: peak of forward + backward for N = 1k .. 16k. Goal: tiled < 1/10 of materialised at
   N = 8192, and linear in N (the "x per doubling" column is ~2 for linear, ~4 for quadratic).
2. Time: forward and forward + backward. Goal: tiled within 1.5x of materialised at N = 4096.
3. Block size: forward time of the tiled path for square blocks, with the working set of one
   block step (Q_i, K_j, V_j, S_ij, the accumulator, all heads) against this CPU's caches.

Memory method: every case runs in a fresh subprocess (this script, --child), which builds its
inputs, resets the kernel's resident-set peak (writes 5 to /proc/self/clear_refs) and reports
peak resident bytes (VmHWM) minus resident bytes before the call. Why not the alternatives:
torch's CPU allocator keeps no peak counter (torch.cuda.max_memory_allocated has no CPU twin),
tracemalloc does not see torch's C allocations, and torch.profiler's memory events give per-op
totals that would have to be replayed for a peak (and slow the tiled path's many small ops).
Resident memory counts what the process really touched: saved tensors, temporaries, allocator
slack. MALLOC_MMAP_THRESHOLD_=65536 makes glibc hand every freed buffer over 64 KiB back to the
OS at once, so the peak is the peak of live memory, not of freed-but-kept heap. Where
/proc/self/clear_refs is missing the peak is ru_maxrss and the column says so. The materialised
path is skipped (and the table says so) where its projected peak exceeds 80% of MemAvailable.

Time method: one torch thread, every variant once per round (interleaved, so background load
hits all alike), median of the rounds; the load average is printed before and after.

    .venv/bin/python benchmarks/flash_attention.py            # full (minutes; quiet machine)
    .venv/bin/python benchmarks/flash_attention.py --quick    # small sizes, seconds
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table

from llm_internals.layers.attention import scaled_dot_product_attention
from llm_internals.layers.cpu_caches import read_cpu_caches
from llm_internals.layers.flash_attention import flash_attention
from llm_internals.layers.flash_io import Tiling, tiled_io
from llm_internals.layers.masks import causal_mask

IMPLS = ("tiled", "materialised", "sdpa")
FULL = dict(memory=(1024, 2048, 4096, 8192, 16384), time=(1024, 2048, 4096), block_n=2048,
            blocks=(16, 32, 64, 128, 256, 512), rounds=3)  # fmt: skip
QUICK = dict(memory=(256,), time=(128, 256), block_n=256, blocks=(32, 64, 128), rounds=1)


def attention_fn(impl: str, causal: bool, block: int) -> Callable[..., torch.Tensor]:
    if impl == "tiled":
        return lambda q, k, v: flash_attention(q, k, v, causal=causal, block_q=block,
                                               block_k=block)  # fmt: skip
    if impl == "materialised":
        return lambda q, k, v: scaled_dot_product_attention(
            q, k, v, mask=causal_mask(q.shape[-2], device=q.device) if causal else None
        )
    return lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=causal)


def inputs(n: int, heads: int, dim: int, grad: bool) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    q, k, v, d_out = (torch.randn(1, heads, n, dim, generator=g) for _ in range(4))
    return (*(x.requires_grad_(grad) for x in (q, k, v)), d_out)


def run_once(fn: Callable[..., torch.Tensor], tensors: tuple[torch.Tensor, ...]) -> None:
    q, k, v, d_out = tensors
    if q.requires_grad:
        fn(q, k, v).backward(d_out)
        for x in (q, k, v):
            x.grad = None
    else:
        with torch.no_grad():
            fn(q, k, v)


# ---- memory: one fresh process per case --------------------------------------------------


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def child_memory(impl: str, n: int, heads: int, dim: int, causal: bool, block: int) -> dict:
    """Peak resident bytes of one forward + backward above the resident bytes just before it."""
    torch.set_num_threads(1)
    fn = attention_fn(impl, causal, block)
    run_once(fn, inputs(min(n, 64), heads, dim, grad=True))  # one-time setup outside the peak
    tensors = inputs(n, heads, dim, grad=True)
    try:
        Path("/proc/self/clear_refs").write_text("5")
        before, method = _status_kib("VmRSS"), "VmHWM"
    except OSError:
        before, method = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "ru_maxrss"
    run_once(fn, tensors)
    peak = _status_kib("VmHWM") if method == "VmHWM" else resource.getrusage(
        resource.RUSAGE_SELF).ru_maxrss  # fmt: skip
    return {"peak_bytes": (peak - before) * 1024, "method": method}


def measure_memory(impl: str, n: int, args: argparse.Namespace) -> dict:
    """One case in a fresh process (see the module docstring)."""
    return measure_in_one_process((impl,), n, args)[0]


def measure_in_one_process(impls: tuple[str, ...], n: int, args: argparse.Namespace) -> list:
    """Several cases one after another in one fresh process, the peak reset before each (the
    tests use this to pay for one torch import instead of several)."""
    command = [sys.executable, __file__, "--child", ",".join(impls), str(n), "--heads",
               str(args.heads), "--dim", str(args.dim), "--block", str(args.block)]  # fmt: skip
    command += ["--causal"] if args.causal else []
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", OMP_NUM_THREADS="1")
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        error = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"
        return [{"error": error} for _ in impls]
    return json.loads(done.stdout.strip().splitlines()[-1])


def available_bytes() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 8 * 2**30


def memory_table(args: argparse.Namespace, sizes: tuple[int, ...], console: Console) -> None:
    table = Table(title=f"Peak memory of forward + backward (MiB above inputs), d {args.dim}, "
                  f"{args.heads} heads, fp32{', causal' if args.causal else ''}")  # fmt: skip
    for column in ("N", "scores N^2 MiB", "tiled", "x per doubling", "materialised",
                   "x per doubling", "sdpa", "x per doubling", "tiled / materialised"):  # fmt: skip
        table.add_column(column, justify="right")
    previous: dict[str, float] = {}
    per_score_byte = 6.0  # materialised peak / one N x N fp32 matrix; updated once measured
    method = ""
    for n in sizes:
        score_bytes = args.heads * n * n * 4
        row, mib = [str(n), f"{score_bytes / 2**20:.0f}"], {}
        for impl in IMPLS:  # one at a time: the subprocesses never overlap
            need = per_score_byte * score_bytes
            if impl == "materialised" and need > 0.8 * available_bytes():
                row += [f"skipped: needs ~{need / 2**30:.0f} GiB", ""]
                continue
            result = measure_memory(impl, n, args)
            if "error" in result:
                row += [f"error: {result['error'][:40]}", ""]
                continue
            method = result["method"]
            mib[impl] = result["peak_bytes"] / 2**20
            if impl == "materialised":
                per_score_byte = max(result["peak_bytes"] / score_bytes, 1.0)
            growth = f"{mib[impl] / previous[impl]:.2f}x" if impl in previous else ""
            row += [f"{mib[impl]:.1f}", growth]
        previous.update(mib)
        ratio = (
            mib["tiled"] / mib["materialised"] if {"tiled", "materialised"} <= set(mib) else None
        )
        table.add_row(*row, f"{ratio:.3f}" if ratio is not None else "")
    console.print(table)
    console.print(f"peak measured as {method} (fresh process per case, see the docstring)")


# ---- time ----------------------------------------------------------------------------------


def median_times(fns: dict[str, Callable], tensors: tuple[torch.Tensor, ...], rounds: int) -> dict:
    times: dict[str, list[float]] = {name: [] for name in fns}
    for fn in fns.values():
        run_once(fn, tensors)  # warm-up
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            run_once(fn, tensors)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def time_table(args: argparse.Namespace, sizes: tuple[int, ...], rounds: int, console: Console):
    table = Table(title=f"Time, median s of {rounds} interleaved rounds (1 thread), d {args.dim}, "
                  f"{args.heads} heads, blocks {args.block}x{args.block}")  # fmt: skip
    for column in ("N", "pass", "tiled s", "materialised s", "sdpa s", "tiled / materialised",
                   "tiled / sdpa"):  # fmt: skip
        table.add_column(column, justify="right")
    fns = {impl: attention_fn(impl, args.causal, args.block) for impl in IMPLS}
    for n in sizes:
        for label, grad in (("forward", False), ("forward + backward", True)):
            s = median_times(fns, inputs(n, args.heads, args.dim, grad), rounds)
            table.add_row(str(n), label, *(f"{s[i]:.3f}" for i in IMPLS),
                          f"{s['tiled'] / s['materialised']:.2f}x",
                          f"{s['tiled'] / s['sdpa']:.2f}x")  # fmt: skip
    console.print(table)


def block_table(args: argparse.Namespace, n: int, blocks: tuple[int, ...], rounds: int,
                console: Console) -> None:  # fmt: skip
    caches = read_cpu_caches()
    levels = ", ".join(f"{c.label} {c.size_bytes // 1024} KiB" for c in caches.caches)
    table = Table(title=f"Tiled forward vs block size, N {n}, d {args.dim}, {args.heads} heads "
                  f"(caches per core: {levels or 'unknown: ' + caches.source})")  # fmt: skip
    for column in ("block", "working set KiB", "fits in", "IO model MiB moved", "forward s",
                   "vs best"):  # fmt: skip
        table.add_column(column, justify="right")
    fns = {b: attention_fn("tiled", args.causal, b) for b in blocks}
    s = median_times(fns, inputs(n, args.heads, args.dim, grad=False), rounds)
    best = min(s.values())
    for b in blocks:
        work = args.heads * (2 * b * args.dim + 2 * b * args.dim + b * b) * 4
        fits = next((c.label for c in caches.caches if work <= c.size_bytes), "RAM")
        moved = tiled_io(Tiling(n, n, args.dim, 4, b, b, args.causal, args.heads)).total_bytes
        table.add_row(str(b), f"{work / 1024:.0f}", fits, f"{moved / 2**20:.1f}",
                      f"{s[b]:.3f}", f"{s[b] / best:.2f}x")  # fmt: skip
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, seconds (for tests)")
    parser.add_argument("--heads", type=int, default=8, help="attention heads (default: 8)")
    parser.add_argument("--dim", type=int, default=64, help="head dimension (default: 64)")
    parser.add_argument("--block", type=int, default=64,
                        help="tiled block size, queries and keys (default: 64)")  # fmt: skip
    parser.add_argument("--causal", action="store_true", help="causal attention (default: off)")
    parser.add_argument("--rounds", type=int, default=None,
                        help="timed rounds per case (default: 3, --quick 1)")  # fmt: skip
    parser.add_argument("--only", choices=("memory", "time", "blocks"), default=None,
                        help="run one part only (default: all three)")  # fmt: skip
    parser.add_argument("--max-n", type=int, default=None,
                        help="leave out sequence lengths above this (default: none)")  # fmt: skip
    parser.add_argument("--child", nargs=2, metavar=("IMPLS", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        impls, n = args.child
        print(json.dumps([child_memory(impl, int(n), args.heads, args.dim, args.causal,
                                       args.block) for impl in impls.split(",")]))  # fmt: skip
        return
    torch.set_num_threads(1)
    sizes = dict(QUICK if args.quick else FULL)
    if args.max_n:
        for part in ("memory", "time"):
            sizes[part] = tuple(n for n in sizes[part] if n <= args.max_n)
        sizes["block_n"] = min(sizes["block_n"], args.max_n)
    rounds = args.rounds or sizes["rounds"]
    console = Console(width=140)
    console.print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, load average before: "
                  f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}")  # fmt: skip
    if args.only in (None, "memory"):
        memory_table(args, sizes["memory"], console)
    if args.only in (None, "time"):
        time_table(args, sizes["time"], rounds, console)
    if args.only in (None, "blocks"):
        block_table(args, sizes["block_n"], sizes["blocks"], rounds, console)
    console.print(f"load average after: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
