"""Serving: the paged engine (continuous batching, paged KV, prefix caching) vs static batches.

Claims (issue 7), all in one run on the same random GPT-2-124M-shaped fp32 weights, 64 requests
with prompt lengths uniform in [16, 512] and output lengths uniform in [16, 256] (seed 0, greedy,
ignore_eos so every request gets exactly its output length):
(a) output tokens/s of the paged engine (all requests submitted at once) >= 3x HF `generate` and
    >= 2x our contiguous-cache batched `generate`, both run on static padded batches of the same
    requests in submission order (`--batch-size`, default 16). A static batch runs until its
    longest request is done; only the tokens each request asked for count as useful output.
(b) KV memory waste (allocated but unused token slots) < 4% for the paged engine, sampled after
    every engine step from the block manager (peak, mean over steps, and at peak allocation), next
    to contiguous preallocation for the same workload: the static batches (every row reserves
    the padded prompt width + the batch's longest output) and, at the engine's own steps, a
    per-request reservation of prompt + max_tokens, or of the model's whole context.
(c) prefix caching: 32 requests sharing a 512-token prefix plus a distinct 16-token suffix; time
    to first token with the prefix cache <= 1/3 of without. The requests arrive one after another
    (each is served before the next arrives), so TTFT is the request's own prefill, not queueing;
    the first request is reported apart (cold: nothing cached yet) and mean/median are over the
    other 31.

Timing: `--reps N` repeats (a) N times, the three systems interleaved, and reports medians; wall
time and this process's CPU time (on a shared CPU the process also waits for a
core; CPU time is close to what a dedicated core would take). One torch thread by default (see
benchmarks/decode.py for why). Greedy outputs are compared across the three systems.

    .venv/bin/python benchmarks/serving.py [--reps 2]  # the full run of the issue
    .venv/bin/python benchmarks/serving.py --quick    # small sizes, about a minute
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import transformers
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from decode import _wall_and_cpu, hf_gpt2  # noqa: E402  (a sibling benchmark script)
from llm_internals.inference.decode_layout import use_decode_layout  # noqa: E402
from llm_internals.inference.generate import generate  # noqa: E402
from llm_internals.inference.paged import LLM  # noqa: E402
from llm_internals.inference.params import SamplingParams  # noqa: E402
from llm_internals.models import load_pretrained  # noqa: E402

console = Console(highlight=False, width=200)
TARGET_VS_HF, TARGET_VS_OURS, TARGET_WASTE, TARGET_TTFT = 3.0, 2.0, 0.04, 1 / 3


@dataclass(frozen=True)
class Request:
    prompt: list[int]
    max_tokens: int


@dataclass
class Run:
    """One system's pass over the workload: seconds and the useful tokens of each request."""

    wall_s: float
    cpu_s: float
    outputs: list[list[int]]

    @property
    def tokens(self) -> int:
        return sum(len(o) for o in self.outputs)


@dataclass
class Waste:
    """Allocated and used token slots, one pair per sample (an engine step or a static step)."""

    allocated: list[int] = field(default_factory=list)
    used: list[int] = field(default_factory=list)

    def add(self, allocated: int, used: int) -> None:
        if allocated > 0:
            self.allocated.append(allocated)
            self.used.append(used)

    def fractions(self) -> list[float]:
        return [1 - u / a for a, u in zip(self.allocated, self.used, strict=True)]

    def summary(self) -> tuple[float, float, float, int]:
        """(peak waste, mean waste over samples, waste when most slots were allocated, those
        allocated slots)."""
        fractions = self.fractions()
        at = max(range(len(self.allocated)), key=self.allocated.__getitem__)
        return max(fractions), statistics.fmean(fractions), fractions[at], self.allocated[at]


def make_workload(n: int, prompt_range: tuple[int, int], output_range: tuple[int, int],
                  vocab_size: int, seed: int) -> list[Request]:  # fmt: skip
    """n requests, random token ids, lengths uniform in the inclusive ranges."""
    rng = random.Random(seed)
    return [
        Request(
            [rng.randrange(vocab_size) for _ in range(rng.randint(*prompt_range))],
            rng.randint(*output_range),
        )  # fmt: skip
        for _ in range(n)
    ]


def static_batches(workload: list[Request], batch_size: int) -> list[list[Request]]:
    return [workload[i : i + batch_size] for i in range(0, len(workload), batch_size)]


def greedy(max_tokens: int) -> SamplingParams:
    return SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True)


def hf_batch(hf: transformers.PreTrainedModel, batch: list[Request]) -> list[list[int]]:
    """One static batch through HF generate: left padding, run to the longest requested output."""
    width, longest = max(len(r.prompt) for r in batch), max(r.max_tokens for r in batch)
    ids = torch.zeros((len(batch), width), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, r in enumerate(batch):
        ids[row, width - len(r.prompt) :] = torch.tensor(r.prompt)
        mask[row, width - len(r.prompt) :] = 1
    with torch.inference_mode():
        out = hf.generate(ids, attention_mask=mask, max_new_tokens=longest,
                          min_new_tokens=longest, do_sample=False, use_cache=True,
                          pad_token_id=0)  # fmt: skip
    return [out[row, width : width + r.max_tokens].tolist() for row, r in enumerate(batch)]


def ours_batch(model: torch.nn.Module, batch: list[Request]) -> list[list[int]]:
    """One static batch through our contiguous-cache generate (left padding, same rule)."""
    longest = max(r.max_tokens for r in batch)
    results = generate(model, None, [r.prompt for r in batch], max_new_tokens=longest,
                       eos_token_id=None)  # fmt: skip
    return [res.token_ids[: r.max_tokens] for res, r in zip(results, batch, strict=True)]


def run_static(run_batch: Callable[[list[Request]], list[list[int]]],
               batches: list[list[Request]]) -> Run:  # fmt: skip
    outputs: list[list[int]] = []
    wall, cpu = _wall_and_cpu(lambda: [outputs.extend(run_batch(b)) for b in batches])
    return Run(wall, cpu, outputs)


def median_run(runs: list[Run]) -> Run:
    """Median wall and CPU seconds over repetitions (the outputs of the first)."""
    return Run(statistics.median(r.wall_s for r in runs), statistics.median(r.cpu_s for r in runs),
               runs[0].outputs)  # fmt: skip


def static_waste(batches: list[list[Request]]) -> Waste:
    """Contiguous preallocation of a static batch: each row reserves the padded prompt width plus
    the batch's longest output for the batch's whole life. Used slots after t generated tokens:
    each row's prompt plus min(t, its own output length); padding and tokens generated past a
    request's length are waste."""
    waste = Waste()
    for batch in batches:
        width, longest = max(len(r.prompt) for r in batch), max(r.max_tokens for r in batch)
        allocated = len(batch) * (width + longest)
        for t in range(1, longest + 1):
            waste.add(allocated, sum(len(r.prompt) + min(t, r.max_tokens) for r in batch))
    return waste


def run_paged(llm: LLM, workload: list[Request]) -> tuple[Run, dict[str, Waste], int]:
    """All requests submitted at once, then llm.step() until done. After every step: the
    engine's own allocated/used slot counts, and what a contiguous reservation of prompt +
    max_tokens (or of the whole context) per running request would hold at the same moment.
    The bookkeeping time is measured and left out of the engine's time. Returns also the peak
    number of running sequences."""
    wastes = {"paged": Waste(), "reserve": Waste(), "context": Waste()}
    outputs: dict[int, list[int]] = {}
    context, peak_running = llm.max_seq_len, 0
    excluded = [0.0, 0.0]

    def record_step() -> None:
        nonlocal peak_running
        wall, cpu = time.perf_counter(), time.process_time()
        stats = llm.stats()
        wastes["paged"].add(stats.kv_slots_allocated, stats.kv_slots_used)
        running = llm.scheduler.running
        used = sum(s.num_computed_tokens for s in running)
        wastes["reserve"].add(sum(s.num_prompt_tokens + s.params.max_tokens for s in running), used)
        wastes["context"].add(context * len(running), used)
        peak_running = max(peak_running, len(running))
        excluded[0] += time.perf_counter() - wall
        excluded[1] += time.process_time() - cpu

    def serve() -> None:
        for i, r in enumerate(workload):
            llm.add_request(str(i), r.prompt, greedy(r.max_tokens))
        while llm.has_unfinished():
            for out in llm.step():
                if out.finished:
                    outputs[int(out.request_id)] = out.token_ids
            record_step()

    wall, cpu = _wall_and_cpu(serve)
    run = Run(wall - excluded[0], cpu - excluded[1], [outputs[i] for i in range(len(workload))])
    return run, wastes, peak_running


def prefix_ttfts(model: torch.nn.Module, prompts: list[list[int]], caching: bool,
                 block_size: int) -> tuple[list[float], list[float], float]:  # fmt: skip
    """Each prompt served alone, one after another (max_tokens 1): TTFT by wall clock (the
    engine's metrics) and by CPU time; plus the prefix-cache hit rate."""
    llm = LLM(model, None, block_size=block_size, enable_prefix_caching=caching,
              max_num_batched_tokens=1024)  # fmt: skip
    walls, cpus = [], []
    for i, prompt in enumerate(prompts):
        cpu = time.process_time()
        llm.add_request(f"p{i}", prompt, greedy(1))
        first = None
        while first is None:
            first = next((o for o in llm.step() if o.token_ids), None)
        cpus.append(time.process_time() - cpu)
        walls.append(first.metrics.time_to_first_token)
        while llm.has_unfinished():
            llm.step()
    return walls, cpus, llm.stats().prefix_cache_hit_rate


def build_models(seed: int) -> tuple[torch.nn.Module, transformers.PreTrainedModel]:
    """Ours (fast path, decode layout) and HF's GPT-2-124M with the same random weights."""
    torch.manual_seed(seed)
    hf = hf_gpt2().eval()
    with tempfile.TemporaryDirectory() as tmp:
        hf.save_pretrained(tmp)
        ours = use_decode_layout(load_pretrained(Path(tmp), attn_impl="sdpa", fused_ops=True))
    return ours, hf


def _fmt_waste(waste: Waste, bytes_per_slot: int) -> list[str]:
    peak, mean, at_peak, slots = waste.summary()
    return [f"{peak:.1%}", f"{mean:.1%}", f"{at_peak:.1%}",
            f"{slots:,} ({slots * bytes_per_slot / 2**30:.2f} GiB)"]  # fmt: skip


def throughput_section(args, ours, hf, workload) -> None:
    batches = static_batches(workload, args.batch_size)
    bs = args.block_size
    blocks = sum(-(-(len(r.prompt) + r.max_tokens) // bs) for r in workload)

    def engine() -> LLM:
        return LLM(ours, None, block_size=bs, num_blocks=args.num_blocks or blocks,
                   max_num_seqs=args.max_num_seqs,
                   max_num_batched_tokens=args.max_num_batched_tokens)  # fmt: skip

    prompt_tokens = sum(len(r.prompt) for r in workload)
    console.print(f"workload: {len(workload)} requests, prompt tokens {prompt_tokens:,}, "
                  f"requested output tokens {sum(r.max_tokens for r in workload):,}; engine "
                  f"pool {args.num_blocks or blocks} blocks of {bs} (max_num_seqs "
                  f"{args.max_num_seqs}, max_num_batched_tokens "
                  f"{args.max_num_batched_tokens}); {args.reps} repetition(s), interleaved, "
                  "median")  # fmt: skip
    runs: dict[str, list[Run]] = {"paged": [], "ours": [], "hf": []}
    wastes: dict[str, Waste] = {}
    for rep in range(args.reps):
        llm = engine()
        paged, waste_samples, peak_running = run_paged(llm, workload)
        runs["paged"].append(paged)
        wastes = wastes or waste_samples  # the same schedule every repetition
        console.print(f"rep {rep + 1}: paged engine {paged.wall_s:.1f} s ({paged.cpu_s:.1f} CPU "
                      f"s), {llm.stats().num_steps} steps, peak {peak_running} running, "
                      f"{llm.stats().preemptions} preemptions")  # fmt: skip
        runs["ours"].append(run_static(lambda b: ours_batch(ours, b), batches))
        console.print(f"rep {rep + 1}: ours contiguous static batches {runs['ours'][-1].wall_s:.1f}"
                      f" s ({runs['ours'][-1].cpu_s:.1f} CPU s)")  # fmt: skip
        runs["hf"].append(run_static(lambda b: hf_batch(hf, b), batches))
        console.print(f"rep {rep + 1}: HF static batches {runs['hf'][-1].wall_s:.1f} s "
                      f"({runs['hf'][-1].cpu_s:.1f} CPU s)")  # fmt: skip
    paged, contiguous, hf_run = (median_run(runs[k]) for k in ("paged", "ours", "hf"))

    generated = sum(len(b) * max(r.max_tokens for r in b) for b in batches)
    table = Table(title=f"(a) throughput: useful output tokens/s, {len(workload)} requests, "
                  f"static batch size {args.batch_size}", title_justify="left")  # fmt: skip
    for col in (
        "system",
        "tokens generated",
        "wall s",
        "tok/s",
        "CPU s",
        "tok/CPU-s",
        "paged / this (wall)",
        "paged / this (CPU)",
        "target",
        "same tokens as paged",
    ):
        table.add_column(col, justify="left" if col == "system" else "right")
    rows = [("paged engine (continuous batching)", paged, paged.tokens, None),
            ("ours contiguous generate, static", contiguous, generated, TARGET_VS_OURS),
            ("HF generate, static padded", hf_run, generated, TARGET_VS_HF)]  # fmt: skip
    for name, run, made, target in rows:
        same = sum(a == b for a, b in zip(run.outputs, paged.outputs, strict=True))
        table.add_row(
            name, f"{made:,}", f"{run.wall_s:.1f}", f"{run.tokens / run.wall_s:.1f}",
            f"{run.cpu_s:.1f}", f"{run.tokens / run.cpu_s:.1f}",
            f"{run.wall_s / paged.wall_s:.2f}x" if target else "",
            f"{run.cpu_s / paged.cpu_s:.2f}x" if target else "",
            f">= {target:.0f}x" if target else "", f"{same}/{len(workload)}",
        )  # fmt: skip
    console.print(table)

    per_slot = 2 * ours.config.n_layers * ours.config.n_kv_heads * ours.config.head_dim * 4
    waste = Table(title="(b) KV waste: allocated but unused token slots (fraction of allocated)",
                  title_justify="left")  # fmt: skip
    for col in ("scheme", "peak", "mean over steps", "at peak allocation",
                "slots at peak allocation", "target"):  # fmt: skip
        waste.add_column(col, justify="left" if col == "scheme" else "right")
    waste.add_row(f"paged engine, block_size {bs} (measured every step)",
                  *_fmt_waste(wastes["paged"], per_slot), f"< {TARGET_WASTE:.0%}")  # fmt: skip
    waste.add_row(f"contiguous static batches of {args.batch_size} (padded width + longest "
                  "output)", *_fmt_waste(static_waste(batches), per_slot), "")  # fmt: skip
    waste.add_row("contiguous per request: prompt + max_tokens (at the engine's steps)",
                  *_fmt_waste(wastes["reserve"], per_slot), "")  # fmt: skip
    waste.add_row(f"contiguous per request: whole context {ours.config.max_seq_len} (engine's "
                  "steps)", *_fmt_waste(wastes["context"], per_slot), "")  # fmt: skip
    console.print(waste)


def prefix_section(args, ours) -> None:
    rng = random.Random(args.seed + 1)
    vocab = ours.config.vocab_size
    prefix = [rng.randrange(vocab) for _ in range(args.prefix_len)]
    prompts = [prefix + [rng.randrange(vocab) for _ in range(args.suffix_len)]
               for _ in range(args.prefix_requests)]  # fmt: skip
    results = {c: prefix_ttfts(ours, prompts, c, args.block_size) for c in (True, False)}
    table = Table(title=f"(c) time to first token, {len(prompts)} requests = shared "
                  f"{args.prefix_len}-token prefix + {args.suffix_len} distinct tokens, served "
                  "one after another (ms; mean/median over requests 2..n)",
                  title_justify="left")  # fmt: skip
    for col in ("prefix caching", "cold first (wall)", "mean (wall)", "median (wall)",
                "mean (CPU)", "median (CPU)", "hit rate", "on / off (mean wall)",
                "on / off (mean CPU)", "target"):  # fmt: skip
        table.add_column(col, justify="left" if col == "prefix caching" else "right")
    mean_on = {kind: statistics.fmean(results[True][kind][1:]) for kind in (0, 1)}
    for caching in (True, False):
        walls, cpus, hit = results[caching]
        mean_wall, mean_cpu = statistics.fmean(walls[1:]), statistics.fmean(cpus[1:])
        table.add_row(
            "on" if caching else "off", f"{walls[0] * 1e3:.0f}", f"{mean_wall * 1e3:.1f}",
            f"{statistics.median(walls[1:]) * 1e3:.1f}", f"{mean_cpu * 1e3:.1f}",
            f"{statistics.median(cpus[1:]) * 1e3:.1f}", f"{hit:.1%}",
            "" if caching else f"{mean_on[0] / mean_wall:.3f}",
            "" if caching else f"{mean_on[1] / mean_cpu:.3f}",
            "" if caching else f"<= {TARGET_TTFT:.3f}",
        )  # fmt: skip
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (about a minute)")
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--prompt-range", type=int, nargs=2, default=(16, 512))
    parser.add_argument("--output-range", type=int, nargs=2, default=(16, 256))
    parser.add_argument("--batch-size", type=int, default=16, help="static batch size")
    parser.add_argument("--block-size", type=int, default=16)
    parser.add_argument(
        "--num-blocks",
        type=int,
        default=None,
        help="engine pool; default: every request at full length at once",
    )
    parser.add_argument("--max-num-seqs", type=int, default=64)
    parser.add_argument("--max-num-batched-tokens", type=int, default=1024)
    parser.add_argument("--prefix-requests", type=int, default=32)
    parser.add_argument("--prefix-len", type=int, default=512)
    parser.add_argument("--suffix-len", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--reps", type=int, default=1, help="repetitions of (a), median")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-prefix", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.requests, args.prompt_range, args.output_range = 16, (16, 128), (8, 48)
        args.batch_size, args.prefix_requests, args.prefix_len = 8, 8, 128
    torch.set_num_threads(args.threads)
    ours, hf = build_models(args.seed)
    console.print(f"torch {torch.__version__}, transformers {transformers.__version__}, "
                  f"{args.threads} thread(s); GPT-2-124M-shaped random fp32 weights, "
                  "greedy")  # fmt: skip
    if not args.skip_throughput:
        workload = make_workload(args.requests, tuple(args.prompt_range),
                                 tuple(args.output_range), ours.config.vocab_size,
                                 args.seed)  # fmt: skip
        throughput_section(args, ours, hf, workload)
    if not args.skip_prefix:
        prefix_section(args, ours)


if __name__ == "__main__":
    main()
