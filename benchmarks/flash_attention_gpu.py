"""Flash attention on a GPU: our Triton kernel (llm_internals.kernels) against torch SDPA's
flash backend (FlashAttention-2 in CUDA), forward and forward + backward, bf16, same inputs,
interleaved (ours, SDPA, ours, ...; median of the repetitions).

    python benchmarks/flash_attention_gpu.py [--lengths 1024 2048 ...] [--head-dims 64 128]
                                             [--causal both] [--reps 10] [--out FILE.json]

Shapes follow the FlashAttention-2 paper's benchmark: 16k tokens per batch (batch = 16384 / N)
and model width 2048 (heads = 2048 / d), so every row does the same token work.
FLOPs (the Triton tutorial's count): forward 4 * batch * heads * N^2 * d (two matmuls of
2 N^2 d each), halved when causal; the backward pass is 2.5 times the forward (four matmuls plus
the recomputed QK^T), so forward + backward is 3.5 times the forward.
tokens/s = batch * N / seconds. "max |O diff|" compares the two outputs (bf16 rounding: ~1e-2).
GPU work is asynchronous: each timed call ends with torch.cuda.synchronize().
Needs a CUDA GPU and triton; scripts/gpu_check.sh runs it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table

from llm_internals.devices import synchronize
from llm_internals.files import write_json

TOKENS, WIDTH = 16384, 2048
PASSES = ("forward", "forward+backward")


def shape_for(n: int, head_dim: int) -> tuple[int, int]:
    """(batch, heads) for sequence length n: TOKENS tokens, WIDTH = heads * head_dim."""
    return max(1, TOKENS // n), max(1, WIDTH // head_dim)


def attention_flops(batch: int, heads: int, n: int, head_dim: int, causal: bool, passes: str):
    """Matmul FLOPs of one attention call (see the module doc)."""
    forward = 4 * batch * heads * n * n * head_dim * (0.5 if causal else 1.0)
    return forward * (3.5 if passes == "forward+backward" else 1.0)


def timed(fn: Callable[[], object], device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def measure(
    n: int,
    head_dim: int,
    causal: bool,
    reps: int,
    device: torch.device,
    dtype: torch.dtype = torch.bfloat16,
    shape: tuple[int, int] | None = None,
    warmup: int = 3,
) -> list[dict]:
    """One row per pass: median seconds of ours and SDPA-flash on the same inputs of
    (batch, heads) = `shape` (default shape_for(n, head_dim)). The CPU test runs it tiny, in
    fp32 under Triton's interpreter."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from llm_internals.kernels.flash_attention_triton import triton_flash_attention

    batch, heads = shape_for(n, head_dim) if shape is None else shape
    gen = torch.Generator(device=device).manual_seed(0)
    q, k, v, dout = (torch.randn(batch, heads, n, head_dim, device=device, dtype=dtype,
                                 generator=gen) for _ in range(4))  # fmt: skip
    for x in (q, k, v):
        x.requires_grad_()

    def sdpa(q, k, v):
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal)

    impls = {"triton": lambda q, k, v: triton_flash_attention(q, k, v, causal=causal),
             "sdpa": sdpa}  # fmt: skip
    with torch.no_grad():
        diff = (impls["triton"](q, k, v).float() - sdpa(q, k, v).float()).abs().max().item()
    rows = []
    for passes in PASSES:
        if passes == "forward":
            runs = {name: (lambda f=f: f(q.detach(), k.detach(), v.detach()))
                    for name, f in impls.items()}  # fmt: skip
        else:
            runs = {name: (lambda f=f: torch.autograd.grad(f(q, k, v), (q, k, v), dout))
                    for name, f in impls.items()}  # fmt: skip
        seconds: dict[str, list[float]] = {name: [] for name in runs}
        for run in runs.values():  # warm-up: compiles the kernels, settles the clocks
            for _ in range(warmup):
                timed(run, device)
        for _ in range(reps):
            for name, run in runs.items():
                seconds[name].append(timed(run, device))
        flops = attention_flops(batch, heads, n, head_dim, causal, passes)
        row = dict(head_dim=head_dim, n=n, batch=batch, heads=heads, causal=causal,
                   passes=passes, max_abs_diff=diff)  # fmt: skip
        for name, values in seconds.items():
            median = statistics.median(values)
            row[f"{name}_ms"] = median * 1e3
            row[f"{name}_tflops"] = flops / median / 1e12
            row[f"{name}_tokens_per_s"] = batch * n / median
        rows.append(row)
        print(f"d={head_dim} N={n} causal={causal} {passes}: Triton {row['triton_ms']:.3f} ms "
              f"({row['triton_tflops']:.1f} TFLOP/s), SDPA {row['sdpa_ms']:.3f} ms "
              f"({row['sdpa_tflops']:.1f} TFLOP/s)", file=sys.stderr, flush=True)  # fmt: skip
    return rows


def table(rows: list[dict], device: str) -> Table:
    out = Table(
        title=f"flash attention on {device}, bf16: Triton kernel vs torch SDPA flash",
        title_justify="left",
    )
    columns = (
        "d",
        "N",
        "batch x heads",
        "causal",
        "pass",
        "Triton ms",
        "SDPA ms",
        "Triton TFLOP/s",
        "SDPA TFLOP/s",
        "Triton tok/s",
        "SDPA tok/s",
        "Triton / SDPA speed",
        "max |O diff|",
    )
    for column in columns:
        out.add_column(column, justify="right")
    for r in rows:
        out.add_row(
            str(r["head_dim"]),
            str(r["n"]),
            f"{r['batch']} x {r['heads']}",
            "yes" if r["causal"] else "no",
            r["passes"],
            f"{r['triton_ms']:.3f}",
            f"{r['sdpa_ms']:.3f}",
            f"{r['triton_tflops']:.1f}",
            f"{r['sdpa_tflops']:.1f}",
            f"{r['triton_tokens_per_s']:.3g}",
            f"{r['sdpa_tokens_per_s']:.3g}",
            f"{r['sdpa_ms'] / r['triton_ms']:.2f}x",
            f"{r['max_abs_diff']:.1e}",
        )
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument(
        "--lengths",
        type=int,
        nargs="+",
        default=[1024, 2048, 4096, 8192, 16384],
        help="sequence lengths N (each a divisor of 16384 keeps 16k tokens)",
    )
    parser.add_argument(
        "--head-dims",
        type=int,
        nargs="+",
        default=[64, 128],
        choices=[32, 64, 128, 256],
        help="head dims d (heads = 2048 / d)",
    )
    parser.add_argument(
        "--causal",
        choices=["both", "yes", "no"],
        default="both",
        help="causal masking: both runs each shape twice",
    )
    parser.add_argument("--reps", type=int, default=10, help="timed repetitions; median shown")
    parser.add_argument("--out", type=Path, help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    if any(n < 1 for n in args.lengths) or args.reps < 1:
        parser.error("--lengths and --reps must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console(highlight=False, width=200)
    if not torch.cuda.is_available():
        console.print("flash_attention_gpu: needs a CUDA GPU (torch sees none); run it through "
                      "scripts/gpu_check.sh on a GPU machine")  # fmt: skip
        return 2
    causal_modes = {"both": (False, True), "yes": (True,), "no": (False,)}[args.causal]
    device = torch.cuda.get_device_name()
    rows = []
    for head_dim in args.head_dims:
        for n in args.lengths:
            for causal in causal_modes:
                rows += measure(n, head_dim, causal, args.reps, torch.device("cuda"))
    console.print(table(rows, device))
    if args.out is not None:
        write_json(args.out, dict(device=device, torch=torch.__version__, rows=rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
