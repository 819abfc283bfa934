"""Time per decode step of our batched Sampler against HF transformers' logits warpers.

Claim: sampling is a small part of a decode step: with a GPT-2 vocabulary (50,257) our Sampler
(temperature + top-k + top-p + min-p + repetition penalty, per-row parameters, one seeded
generator per row) costs about as much as HF's processor chain plus torch.multinomial, which
applies one parameter set to the whole batch.

Method: same logits for both; HF runs RepetitionPenalty, Temperature, TopK, TopP, MinP (its
order), softmax and multinomial. Runs are interleaved (ours, HF, ours...) so load from other
processes on a shared CPU hits both alike; median of the repetitions.
Ratio = HF time / our time (> 1: ours is faster). One torch thread by default: on a CPU shared
with other work, every multi-threaded elementwise op waits for a descheduled worker thread
(measured here: 23 ms instead of 0.12 ms for `(x > 0).any()` on 50k floats), which swamps
what is being compared.

    .venv/bin/python benchmarks/sampling.py [--reps 21] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time
from functools import partial

import torch
from rich.console import Console
from rich.table import Table
from transformers.generation.logits_process import (
    LogitsProcessorList,
    MinPLogitsWarper,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from llm_internals.inference.params import SamplingParams
from llm_internals.inference.sampling import Sampler, make_generator

VOCAB = 50257
HISTORY = 256  # prompt + output tokens seen so far, for the repetition penalty
SETTINGS = {
    "plain T=1": {},
    "T=0.8 top-k 50 top-p 0.9": {"temperature": 0.8, "top_k": 50, "top_p": 0.9},
    "all filters + penalty": {
        "temperature": 0.8, "top_k": 50, "top_p": 0.9, "min_p": 0.05, "repetition_penalty": 1.1,
    },
}  # fmt: skip


def hf_chain(setting: dict) -> LogitsProcessorList:
    chain = LogitsProcessorList()
    if setting.get("repetition_penalty", 1.0) != 1.0:
        chain.append(RepetitionPenaltyLogitsProcessor(setting["repetition_penalty"]))
    if setting.get("temperature", 1.0) != 1.0:
        chain.append(TemperatureLogitsWarper(setting["temperature"]))
    if setting.get("top_k"):
        chain.append(TopKLogitsWarper(setting["top_k"]))
    if setting.get("top_p", 1.0) < 1.0:
        chain.append(TopPLogitsWarper(setting["top_p"]))
    if setting.get("min_p"):
        chain.append(MinPLogitsWarper(setting["min_p"]))
    return chain


def run_hf(chain, history, logits, generator) -> torch.Tensor:
    scores = chain(history, logits.clone())
    return torch.multinomial(scores.softmax(-1), 1, generator=generator)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=21)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (default 1: see the note above)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    console = Console()
    table = Table(
        title=f"sampling one token per row, vocab {VOCAB:,}, {args.threads} thread(s) "
        "(median ms per step)"
    )
    for column in ("setting", "batch", "ours ms", "HF ms", "ratio HF/ours"):
        table.add_column(column, justify="left" if column == "setting" else "right")
    for name, setting in SETTINGS.items():
        for batch in (1, 16):
            logits = torch.randn(batch, VOCAB) * 4
            history = torch.randint(0, VOCAB, (batch, HISTORY))
            ids = history.tolist()
            params = [SamplingParams(seed=row, **setting) for row in range(batch)]
            generators = [make_generator(p.seed) for p in params]
            sampler, chain = Sampler(), hf_chain(setting)
            hf_generator = torch.Generator().manual_seed(0)
            ours = partial(
                sampler, logits, params, generators, prompt_ids=ids, output_ids=[[]] * batch
            )
            hf = partial(run_hf, chain, history, logits, hf_generator)
            times = {"ours": [], "hf": []}
            for _ in range(args.reps):
                for key, fn in (("ours", ours), ("hf", hf)):
                    start = time.perf_counter()
                    fn()
                    times[key].append(time.perf_counter() - start)
            ours_ms = statistics.median(times["ours"]) * 1e3
            hf_ms = statistics.median(times["hf"]) * 1e3
            table.add_row(
                name, str(batch), f"{ours_ms:.2f}", f"{hf_ms:.2f}", f"{hf_ms / ours_ms:.2f}x"
            )
    console.print(table)


if __name__ == "__main__":
    main()
