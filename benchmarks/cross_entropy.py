"""Forward + backward time of our cross-entropy against torch.nn.functional.cross_entropy.

Claim: `training.loss.cross_entropy_fast` (our forward, our hand-written softmax - onehot
backward) costs about as much as torch's fused kernel, while autograd through the step-by-step
`cross_entropy` (the version the lesson records) is several times slower. Sizes: a nanoGPT
character-level batch (12 x 64 tokens, 65 symbols), a BPE batch with an 8k vocabulary, and a
GPT-2-vocabulary batch.

Method: same logits and targets for all three; runs interleaved (ours, fast, torch, ours...) so
load from other processes on a shared CPU hits all alike; median of the repetitions.
Ratio = torch time / our time (> 1: ours is faster).

    .venv/bin/python benchmarks/cross_entropy.py [--reps 15]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table

from llm_internals.training.loss import cross_entropy, cross_entropy_fast

SHAPES = [("char 12x64, V=65", 768, 65), ("BPE 8x256, V=8192", 2048, 8192),
          ("GPT-2 4x256, V=50257", 1024, 50257)]  # fmt: skip
VARIANTS = {
    "ours steps": cross_entropy,  # autograd through every recorded step
    "ours fast": cross_entropy_fast,  # hand-written softmax - onehot backward
    "torch": F.cross_entropy,
}


def time_once(fn, logits, targets) -> float:
    logits.grad = None
    start = time.perf_counter()
    fn(logits, targets).backward()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=15)
    args = parser.parse_args()
    console = Console()
    table = Table(title="cross-entropy forward + backward (fp32, CPU), median")
    for column in ("batch", *(f"{v} ms" for v in VARIANTS), "torch/fast", "torch/steps"):
        table.add_column(column, justify="right")
    torch.manual_seed(0)
    for label, rows, vocab in SHAPES:
        logits = torch.randn(rows, vocab, requires_grad=True)
        targets = torch.randint(0, vocab, (rows,))
        grads = {}
        for name, fn in VARIANTS.items():  # warm-up and parity check
            time_once(fn, logits, targets)
            grads[name] = logits.grad.clone()
        reference = grads["torch"]
        for name, grad in grads.items():
            diff = (grad - reference).abs().max().item()
            console.print(f"{label} {name}: max |grad - torch grad| = {diff:.1e}")
        times = {name: [] for name in VARIANTS}
        for _ in range(args.reps):
            for name, fn in VARIANTS.items():
                times[name].append(time_once(fn, logits, targets))
        ms = {name: statistics.median(t) * 1e3 for name, t in times.items()}
        steps, fast, ref = ms.values()
        table.add_row(label, f"{steps:.2f}", f"{fast:.2f}", f"{ref:.2f}",
                      f"{ref / fast:.2f}", f"{ref / steps:.2f}")  # fmt: skip
    console.print(table)


if __name__ == "__main__":
    main()
