"""Forward-pass speed of our DecoderLM against HF transformers on the same weights.

Claim: a forward pass (fp32, no grad, batch 8 x 256 tokens) of a GPT-2-124M-shaped and a
SmolLM-135M-shaped random model is at least as fast as HF `transformers`, both with the
from-scratch path ("ours scratch": attention, norms and activations written out, as lessons
record them) and with the fast path ("ours fast": SDPA attention and torch's fused norm and
activation kernels).

Method: build a random HF model, save_pretrained it, load the same files with our
load_pretrained and again with HF (eager and sdpa attention). Runs are interleaved (ours, HF,
ours, HF...) so that load from other processes on a shared CPU hits all variants alike, and the
median of the repetitions is reported (and the ratio of the fastest runs, which is less
sensitive to other processes). Ratio = HF time / our time (> 1: ours is faster).

    .venv/bin/python benchmarks/model_forward.py [--reps 7] [--batch 8] [--seq 256] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import torch
from rich.console import Console
from rich.table import Table

from llm_internals.models import load_pretrained
from llm_internals.models.published import hf_config


def hf_models(name: str):
    """The HF model class and config of a published shape (models/published.py)."""
    import transformers

    config = transformers.AutoConfig.for_model(**hf_config(name))
    return getattr(transformers, config.architectures[0]), config


def time_once(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_model(name: str, reps: int, batch: int, seq: int, console: Console) -> list[tuple]:
    model_class, config = hf_models(name)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        model_class(config).save_pretrained(tmp)
        variants = {
            "ours scratch": load_pretrained(tmp, attn_impl="scratch"),
            "ours fast": load_pretrained(tmp, attn_impl="sdpa", fused_ops=True),
            "HF eager": model_class.from_pretrained(tmp, attn_implementation="eager").eval(),
            "HF sdpa": model_class.from_pretrained(tmp, attn_implementation="sdpa").eval(),
        }
    ids = torch.randint(0, config.vocab_size, (batch, seq))
    calls = {
        label: (lambda m=m: m(ids)) if label.startswith("ours") else (lambda m=m: m(ids).logits)
        for label, m in variants.items()
    }
    with torch.inference_mode():
        reference = calls["HF sdpa"]()
        for label, call in calls.items():  # warm-up, and a parity check on these weights
            diff = (call() - reference).abs().max().item()
            console.print(f"{name} {label}: max |logits - HF sdpa| = {diff:.2e}")
        times: dict[str, list[float]] = {label: [] for label in calls}
        labels = list(calls)
        for rep in range(reps):  # rotate the order so no variant always follows the same one
            for label in labels[rep % len(labels) :] + labels[: rep % len(labels)]:
                times[label].append(time_once(calls[label]))
    median = {label: statistics.median(t) for label, t in times.items()}
    fastest = {label: min(t) for label, t in times.items()}
    rows = []
    for ours, ref in (
        ("ours scratch", "HF eager"),
        ("ours scratch", "HF sdpa"),
        ("ours fast", "HF sdpa"),
    ):
        rows.append(
            (name, ours, median[ours], ref, median[ref], median[ref] / median[ours],
             fastest[ref] / fastest[ours])
        )  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--models",
        nargs="+",
        default=["gpt2-124m", "smollm-135m"],
        help="published decoders (names of models/published.py) to time with random weights "
        "(default: gpt2-124m smollm-135m)",
    )
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    console = Console()
    console.print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, fp32, "
        f"batch {args.batch} x {args.seq}, median of {args.reps} interleaved runs, "
        f"load average before: {os.getloadavg()[0]:.2f}"
    )
    table = Table(title="Model forward: ours vs HF transformers (same weights)")
    columns = ("model", "ours", "ours s", "reference", "ref s", "ratio ref/ours", "ratio of mins")
    for column in columns:
        table.add_column(column, justify="left" if column in ("model", "reference") else "right")
    for name in args.models:
        for model, ours, t_ours, ref, t_ref, ratio, ratio_min in bench_model(
            name, args.reps, args.batch, args.seq, console
        ):
            table.add_row(
                model,
                ours,
                f"{t_ours:.3f}",
                ref,
                f"{t_ref:.3f}",
                f"{ratio:.2f}x",
                f"{ratio_min:.2f}x",
            )
    console.print(table)
    console.print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
