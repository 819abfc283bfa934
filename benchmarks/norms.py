"""LayerNorm vs RMSNorm, ours (written-out steps and fused path) against torch.nn's modules.

Claim (lesson "rmsnorm"): RMSNorm drops the mean subtraction and the bias, one reduction instead
of two, so it is cheaper than LayerNorm when both are implemented alike. Measured here: our two
written-out norms, our fused paths (F.layer_norm, F.rms_norm), and the references torch.nn.LayerNorm
and torch.nn.RMSNorm on the same activations (fp32, tokens x d_model).

Method: runs interleaved (every variant once per round) so background load hits all alike; median
of the rounds. One torch thread by default: on a shared CPU multi-threaded elementwise ops wait
for descheduled workers, which swamps what is compared. Ratio = reference time / our time
(> 1: ours is faster); "RMS / LN" compares the two norms within one implementation.

    .venv/bin/python benchmarks/norms.py [--rounds 31] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from rich.console import Console
from rich.table import Table

from llm_internals.layers.norm import LayerNorm, RMSNorm

SHAPES = {"GPT-2 (8 x 256 x 768)": (2048, 768), "Llama-3-8B (8 x 256 x 4096)": (2048, 4096)}


def variants(dim: int) -> dict[str, torch.nn.Module]:
    ours_ln, ours_rms = LayerNorm(dim), RMSNorm(dim)
    fused_ln, fused_rms = LayerNorm(dim), RMSNorm(dim)
    fused_ln.fused = fused_rms.fused = True
    return {
        "ours LN": ours_ln, "ours RMS": ours_rms, "ours fused LN": fused_ln,
        "ours fused RMS": fused_rms, "torch.nn LN": torch.nn.LayerNorm(dim),
        "torch.nn RMS": torch.nn.RMSNorm(dim, eps=1e-6),
    }  # fmt: skip


def measure(shape: tuple[int, int], rounds: int) -> dict[str, float]:
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    modules = variants(shape[1])
    times: dict[str, list[float]] = {name: [] for name in modules}
    with torch.no_grad():
        for module in modules.values():
            module(x)  # warm-up
        for _ in range(rounds):
            for name, module in modules.items():
                start = time.perf_counter()
                module(x)
                times[name].append(time.perf_counter() - start)
    return {name: 1000 * statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=31)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    table = Table(title=f"Norm forward, fp32, median ms of {args.rounds} ({args.threads} thread)")
    for column in ("shape", "impl", "LayerNorm ms", "RMSNorm ms", "RMS / LN",
                   "ref / ours LN", "ref / ours RMS"):  # fmt: skip
        table.add_column(column, justify="right")
    for label, shape in SHAPES.items():
        ms = measure(shape, args.rounds)
        ref_ln, ref_rms = ms["torch.nn LN"], ms["torch.nn RMS"]
        for impl, ln, rms in (("ours, written out", ms["ours LN"], ms["ours RMS"]),
                              ("ours, fused", ms["ours fused LN"], ms["ours fused RMS"]),
                              ("torch.nn (reference)", ref_ln, ref_rms)):  # fmt: skip
            table.add_row(label, impl, f"{ln:.3f}", f"{rms:.3f}", f"{rms / ln:.2f}",
                          f"{ref_ln / ln:.2f}", f"{ref_rms / rms:.2f}")  # fmt: skip
    Console(width=120).print(table)


if __name__ == "__main__":
    main()
