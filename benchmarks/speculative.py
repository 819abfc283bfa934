"""Speculative decoding: measured acceptance and speedup, ours beside HF assisted generation.

Claims (issue 14): greedy speculative decoding with a small draft model is at least 2x the target
alone at batch 1 and produces exactly the target's tokens; the table shows where it stops paying
(larger batches in the engine, low acceptance). Reference: HF `generate(assistant_model=...)`
and `generate(prompt_lookup_num_tokens=...)` on the same two models in the same run.

Method
- Models (benchmarks/speculative_models.py): a 4-layer, 768-wide GPT-2-style target and a
  2-layer, 256-wide draft, trained on Shakespeare with one BPE tokenizer, the draft then
  distilled from the target (speculative_distill.py; --plain-draft skips that), on first run
  (about 40 minutes on 2 loaded CPU cores), cached under --cache-dir, and exported with
  save_pretrained for HF (`--quick`: tiny models trained in seconds, for a smoke test).
- Prompts: --prompts slices of --prompt-tokens tokens from the validation text; every run
  generates --new-tokens tokens greedily (no end-of-text stop), so all rows do the same work.
- Batch 1: target alone, speculative with the draft model and with n-gram prompt lookup for
  gamma = 1..8, and HF plain / assisted / prompt-lookup greedy (at --hf-gammas). Repetitions
  are interleaved (every configuration once per repetition) and the median wall time of a
  repetition (all prompts) is reported; tokens/s = new tokens / that time.
- alpha = accepted / examined drafts (the acceptance rate accepted / proposed is shown too);
  E(alpha, gamma) = (1 - alpha^(gamma+1)) / (1 - alpha) is the expected number of tokens per
  target forward if acceptances were independent with rate alpha (Leviathan et al. 2023),
  beside the observed tokens per target forward; c = draft step time / target step time (each
  measured alone) gives the predicted speedup E / (gamma c + 1), which takes a verification
  forward to cost one decode step (on this CPU one over 5 tokens costs ~1.65: docs/LOG.md).
- "same" says whether every speculative run produced exactly the target-alone tokens (and HF
  plain greedy the same tokens as ours).
- Engine (batch 4 and 16, the prompts repeated): `LLM(..., speculative_model=... |
  speculative_ngram=True, num_speculative_tokens=...)` at --engine-gammas against the same
  engine without speculation, useful tokens/s over the batch (median of --engine-reps).
- One torch thread by default (see benchmarks/decode.py on shared CPUs); the load average is
  printed beside the table. Results are also written as JSON (--out; default
  <cache-dir>/results.json, read by the speculative-decoding lesson).

    .venv/bin/python benchmarks/speculative.py [--quick] [--reps 3] [--gammas 1-8]
        [--hf-gammas 2,4,8] [--engine-gammas 2,4,8] [--engine-reps 2] [--batches 4,16]
        [--skip-hf] [--plain-draft]

After the models are cached a full run should take about 6 minutes on 2 quiet CPU cores (an
estimate from CPU-time probes; the full run was not timed on a loaded machine).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from llm_internals.console import console  # noqa: E402
from speculative_models import (  # noqa: E402
    default_cache_dir,
    distill_plan,
    ensure_model,
    full_plans,
    quick_plans,
)
from speculative_runs import (  # noqa: E402
    Prompts,
    batch1_rows,
    engine_rows,
    hf_rows,
    hf_runners,
    ours_runners,
    print_tables,
    write_results,
)


def parse_gammas(text: str) -> list[int]:
    """'1-8' or '1,2,4' -> [1, ..., 8] / [1, 2, 4]."""
    if "-" in text:
        low, high = text.split("-")
        return list(range(int(low), int(high) + 1))
    return [int(g) for g in text.split(",")]


def interleaved(runners: dict[str, Callable[[], object]], reps: int) -> dict[str, float]:
    """Median wall seconds of each runner, every runner once per repetition, after a warmup of
    the plain and gamma = 1 runners (first calls allocate caches and load kernels)."""
    for name, run in runners.items():
        if "alone" in name or name.endswith("g=1"):
            run()
    samples: dict[str, list[float]] = {name: [] for name in runners}
    for rep in range(reps):
        for name, run in runners.items():
            start = time.perf_counter()
            run()
            samples[name].append(time.perf_counter() - start)
        console.print(f"  repetition {rep + 1}/{reps} done", style="dim")
    return {name: statistics.median(s) for name, s in samples.items()}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny models trained in seconds (a smoke test, not a measurement)",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help=f"where the trained models live (default: %(default)s = {default_cache_dir()})",
    )
    parser.add_argument(
        "--gammas",
        default="1-8",
        help="draft lengths to measure, '1-8' or '1,2,4' (default: %(default)s)",
    )
    parser.add_argument(
        "--reps",
        type=int,
        default=3,
        help="interleaved repetitions, median reported (default: %(default)s)",
    )
    parser.add_argument(
        "--prompts", type=int, default=3, help="prompts per repetition (default: %(default)s)"
    )
    parser.add_argument(
        "--prompt-tokens", type=int, default=16, help="tokens per prompt (default: %(default)s)"
    )
    parser.add_argument(
        "--new-tokens",
        type=int,
        default=96,
        help="tokens generated per prompt (default: %(default)s)",
    )
    parser.add_argument(
        "--batches", default="4,16", help="engine batch sizes, '' for none (default: %(default)s)"
    )
    parser.add_argument(
        "--engine-gammas",
        default="2,4,8",
        help="draft lengths for the engine rows (default: %(default)s)",
    )
    parser.add_argument(
        "--hf-gammas",
        default="2,4,8",
        help="draft lengths for the HF reference rows (default: %(default)s)",
    )
    parser.add_argument(
        "--engine-reps",
        type=int,
        default=2,
        help="engine repetitions after a warmup round (default: %(default)s)",
    )
    parser.add_argument("--plain-draft", action="store_true",
                        help="use the draft trained on the corpus alone, not the one distilled "
                        "from the target")  # fmt: skip
    parser.add_argument("--skip-hf", action="store_true", help="leave out the HF reference rows")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (default: %(default)s)"
    )
    parser.add_argument("--out", type=Path, default=None,
                        help="results JSON (default: <cache-dir>/results.json, "
                        "results-quick.json with --quick)")  # fmt: skip
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cache_dir = args.cache_dir or default_cache_dir()
    if args.quick:
        args.reps, args.prompts, args.new_tokens = 1, 1, 24
        args.gammas = "1,4" if args.gammas == "1-8" else args.gammas
        args.batches = "4" if args.batches == "4,16" else args.batches
    gammas = parse_gammas(args.gammas)
    target_plan, draft_plan = quick_plans() if args.quick else full_plans()
    target_files = ensure_model(target_plan, cache_dir)
    draft_files = ensure_model(draft_plan, cache_dir)
    if not args.plain_draft:
        plan = distill_plan(target_files, draft_files, quick=args.quick)
        draft_files = ensure_model(plan, cache_dir, teacher=target_files, student=draft_files)
    started = time.perf_counter()
    load_before = os.getloadavg()
    prompts = Prompts.from_validation(target_files, args.prompts, args.prompt_tokens,
                                      args.new_tokens)  # fmt: skip
    console.print(
        f"target: {target_files.info['parameters']:,} parameters, validation loss "
        f"{target_files.info['final_val_loss']:.3f}; draft: {draft_files.info['parameters']:,} "
        f"parameters, validation loss {draft_files.info['final_val_loss']:.3f}; {len(prompts.ids)} "
        f"prompts x {args.new_tokens} new tokens, gammas {gammas}, {args.reps} repetitions, "
        f"{torch.get_num_threads()} torch thread(s)"
    )
    ours = ours_runners(target_files, draft_files, prompts, gammas)
    runners = dict(ours.runners)
    hf = None
    if not args.skip_hf:
        hf_gammas = gammas if args.quick else parse_gammas(args.hf_gammas)
        hf = hf_runners(target_files, draft_files, prompts, hf_gammas)
        runners.update(hf.runners)
    seconds = interleaved(runners, args.reps)
    batches = [int(b) for b in args.batches.split(",") if b]
    engine_gammas = gammas if args.quick else parse_gammas(args.engine_gammas)
    engine_reps = 1 if args.quick else args.engine_reps
    engine = engine_rows(target_files, draft_files, prompts, batches, engine_gammas, engine_reps)
    load_after = os.getloadavg()
    results = {
        "quick": args.quick,
        "load_average_before": load_before,
        "load_average_after": load_after,
        "threads": torch.get_num_threads(),
        "prompts": len(prompts.ids),
        "prompt_tokens": args.prompt_tokens,
        "new_tokens": args.new_tokens,
        "reps": args.reps,
        "models": {"target": target_files.info, "draft": draft_files.info},
        "batch1": batch1_rows(ours, seconds),
        "hf": hf_rows(hf, seconds, ours) if hf is not None else [],
        "engine": engine,
        "seconds": time.perf_counter() - started,
    }
    print_tables(results)
    out = args.out or cache_dir / ("results-quick.json" if args.quick else "results.json")
    write_results(out, results)
    console.print(f"Wrote {out} ({results['seconds']:.0f} s after the models were ready).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
