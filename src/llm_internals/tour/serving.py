"""Tour stage "serving": the trained model behind the paged engine, with continuous batching.

Sixteen prompts of different lengths, cut from the validation text, asking for answers of
different lengths, are submitted to the engine at once (`inference.paged.LLM`): it packs every
running sequence into one forward per step, lets finished ones leave and keeps the K/V in
blocks. The same prompts then run through the contiguous-cache `generate` as one static padded
batch, which runs until its longest answer is done. The stage checks both give the same greedy
tokens, compares their speed and the KV memory each holds unused, and serves a group of
requests sharing a prefix to show the prefix cache at work.
"""

from __future__ import annotations

import statistics
import time

import torch
from rich.table import Table

from llm_internals.inference.generate import generate
from llm_internals.inference.paged import LLM
from llm_internals.inference.params import SamplingParams
from llm_internals.tour import TourContext
from llm_internals.tour.generation import _artifacts

N_PROMPTS = 16
BLOCK_SIZE = 8
REPEATS = 3
PREFIX_TOKENS = 32
PREFIX_REQUESTS = 8
SUFFIX_TOKENS = 4
FALLBACK_TEXT = "ROMEO.\nBut soft, what light through yonder window breaks?\n" * 40


def workload(token_ids: list[int], context: int) -> list[tuple[list[int], int]]:
    """(prompt ids, max_tokens) pairs: prompts of 4..40 tokens and answers of 8..24 tokens
    from different places of the text, each fitting the model's context."""
    requests = []
    for i in range(N_PROMPTS):
        length = min(4 + (i * 7) % 37, context - 8)
        start = (i * 97) % max(len(token_ids) - length, 1)
        max_tokens = min(8 + (i * 5) % 17, context - length)
        requests.append((token_ids[start : start + length], max_tokens))
    return requests


def greedy(max_tokens: int) -> SamplingParams:
    return SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True)


def serve_paged(model, tokenizer, requests) -> tuple[list[list[int]], float, list[float], int]:
    """All requests at once, stepping until done: (outputs, seconds, waste after each step,
    steps)."""
    blocks = sum(-(-(len(p) + m) // BLOCK_SIZE) for p, m in requests)
    llm = LLM(model, tokenizer, block_size=BLOCK_SIZE, num_blocks=blocks,
              max_num_seqs=len(requests))  # fmt: skip
    outputs: dict[int, list[int]] = {}
    waste, stepping = [], 0.0
    for i, (prompt, max_tokens) in enumerate(requests):
        llm.add_request(str(i), prompt, greedy(max_tokens))
    while llm.has_unfinished():
        started = time.perf_counter()
        for out in llm.step():
            if out.finished:
                outputs[int(out.request_id)] = out.token_ids
        stepping += time.perf_counter() - started
        stats = llm.stats()
        if stats.kv_slots_allocated:
            waste.append(stats.kv_waste)
    return [outputs[i] for i in range(len(requests))], stepping, waste, llm.stats().num_steps


def serve_contiguous(model, requests) -> tuple[list[list[int]], float]:
    """One static batch through generate, left padded, run to the longest answer."""
    started = time.perf_counter()
    results = generate(model, None, [p for p, _ in requests],
                       max_new_tokens=max(m for _, m in requests), eos_token_id=None)  # fmt: skip
    seconds = time.perf_counter() - started
    return [r.token_ids[:m] for r, (_, m) in zip(results, requests, strict=True)], seconds


def contiguous_waste(requests) -> list[float]:
    """A static batch reserves padded width + longest answer per row for its whole life; after
    t tokens each row holds its prompt and min(t, its answer length) useful tokens."""
    width, longest = max(len(p) for p, _ in requests), max(m for _, m in requests)
    allocated = len(requests) * (width + longest)
    return [1 - sum(len(p) + min(t, m) for p, m in requests) / allocated
            for t in range(1, longest + 1)]  # fmt: skip


def prefix_hit_rate(model, tokenizer, token_ids: list[int]) -> tuple[float, int, int]:
    """Requests sharing a PREFIX_TOKENS prefix: the first alone, the rest together after it.
    Returns (hit rate, prompt tokens found in the cache, prompt tokens looked up)."""
    prefix = token_ids[:PREFIX_TOKENS]
    prompts = [prefix + token_ids[PREFIX_TOKENS + i * SUFFIX_TOKENS :][:SUFFIX_TOKENS]
               for i in range(PREFIX_REQUESTS)]  # fmt: skip
    llm = LLM(model, tokenizer, block_size=BLOCK_SIZE, max_num_seqs=PREFIX_REQUESTS)
    llm.generate(prompts[0], greedy(4))
    llm.generate(prompts[1:], greedy(4))
    stats = llm.stats()
    hit = stats.prefix_cache_hit_tokens
    return stats.prefix_cache_hit_rate, hit, stats.prefix_cache_queried_tokens


def run(ctx: TourContext) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: a second thread only waits
    try:
        _run(ctx)
    finally:
        torch.set_num_threads(threads)


def _run(ctx: TourContext) -> None:
    model, tokenizer, source = _artifacts(ctx)
    model = ctx.place(model).eval()
    text = ctx.val_text or ctx.text or FALLBACK_TEXT
    token_ids = tokenizer.encode(text[:20_000])
    requests = workload(token_ids, model.config.max_seq_len)
    ctx.console.print(
        f"Serving {len(requests)} requests with {source}: prompts of "
        f"{min(len(p) for p, _ in requests)}-{max(len(p) for p, _ in requests)} tokens, answers "
        f"of {min(m for _, m in requests)}-{max(m for _, m in requests)} tokens (greedy), all "
        f"submitted at once to the paged engine (blocks of {BLOCK_SIZE} tokens), then as one "
        f"static padded batch through the contiguous-cache generate. Median of {REPEATS} runs, "
        f"on {ctx.where()}{' (one thread)' if ctx.device.type == 'cpu' else ''}."
    )
    paged_runs = [serve_paged(model, tokenizer, requests) for _ in range(REPEATS)]
    contiguous_runs = [serve_contiguous(model, requests) for _ in range(REPEATS)]
    paged, _, paged_waste, steps = paged_runs[0]
    contiguous = contiguous_runs[0][0]
    paged_s = statistics.median(r[1] for r in paged_runs)
    contiguous_s = statistics.median(r[1] for r in contiguous_runs)
    matches = sum(a == b for a, b in zip(paged, contiguous, strict=True))
    useful = sum(m for _, m in requests)
    static_waste = contiguous_waste(requests)

    table = Table(title="serving the same requests", title_justify="left")
    for column in ("", "seconds", "useful tokens/s", "KV waste mean", "KV waste peak"):
        table.add_column(column, justify="right" if column else "left")
    table.add_row(f"paged engine ({steps} steps)", f"{paged_s:.3f}", f"{useful / paged_s:.0f}",
                  f"{statistics.fmean(paged_waste):.1%}", f"{max(paged_waste):.1%}")  # fmt: skip
    table.add_row("contiguous generate, one static batch", f"{contiguous_s:.3f}",
                  f"{useful / contiguous_s:.0f}", f"{statistics.fmean(static_waste):.1%}",
                  f"{max(static_waste):.1%}")  # fmt: skip
    ctx.console.print(table)
    speedup = contiguous_s / paged_s
    if speedup >= 1:
        why = (
            f"The paged engine served the {useful} useful tokens {speedup:.2f}x as fast: finished "
            "requests leave the batch at once and no prompt is padded, while the static batch "
            "computes every row until its longest answer is done."
        )
    else:
        why = (
            f"The paged engine took {1 / speedup:.2f}x as long here: with a model this small, each "
            "step's bookkeeping in Python (scheduling, block tables, index tensors) costs more "
            "than the forward itself, so skipping padding and finished rows cannot pay for it. "
            "With a GPT-2-sized model the forward dominates (benchmarks/serving.py)."
        )
    ctx.console.print(
        f"Greedy outputs identical to the contiguous-cache generate: "
        f"{ctx.verdict(matches == len(requests))} ({matches}/{len(requests)} requests). "
        f"{why} KV waste is the share of allocated slots holding no token: the static batch "
        "reserves padded width + longest answer for every row; the engine only leaves each "
        "sequence's last block partly empty."
    )
    rate, hit, queried = prefix_hit_rate(model, tokenizer, token_ids)
    ctx.console.print(
        f"Prefix cache: {PREFIX_REQUESTS} requests sharing a {PREFIX_TOKENS}-token prefix (the "
        f"first served alone, then the rest): {hit} of {queried} prompt tokens were found in "
        f"cached blocks, a hit rate of {rate:.1%}; those tokens needed no compute. See "
        "`llm-internals explain paged-attention` and benchmarks/serving.py."
    )
    ctx.artifacts["serving"] = {
        "identical": matches == len(requests),
        "matches": matches,
        "requests": requests,
        "outputs": paged,
        "paged_tokens_per_s": useful / paged_s,
        "contiguous_tokens_per_s": useful / contiguous_s,
        "paged_waste_mean": statistics.fmean(paged_waste),
        "paged_waste_peak": max(paged_waste),
        "contiguous_waste_mean": statistics.fmean(static_waste),
        "prefix_hit_rate": rate,
        "prefix_hit_tokens": hit,
        "prefix_queried_tokens": queried,
    }
