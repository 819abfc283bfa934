"""The seeded workload of the `paged-attention` lesson and its measured run: request lengths,
the contiguous reservations and first-fit placements that paging replaces (arithmetic on the
same lengths), and the workload served by the real engine (`inference.paged.LLM`) with its
waste after every step, as numbers and as a figure.
"""

from __future__ import annotations

import random

from llm_internals.explain.figures import line_figure
from llm_internals.explain.tiny_models import tiny_decoder
from llm_internals.inference.paged import LLM
from llm_internals.inference.params import SamplingParams
from llm_internals.models import DecoderLM
from llm_internals.tokenizer.char import CharTokenizer

WORKLOAD_SEED = 0
WORKLOAD_SIZE = 8
PROMPT_RANGE = (16, 512)
OUTPUT_RANGE = (16, 256)
MAX_TOKENS_CAP = 256  # what a server lets a request ask for, so what it must reserve
CONTEXT = 1024  # GPT-2's context window
SAMPLE_EVERY = 32  # steps between the rows shown of the measured run
MEASURED_BLOCK_SIZE = 16


def tiny_model(vocab_size: int, max_seq_len: int = 64) -> DecoderLM:
    """The lessons' tiny decoder (explain/tiny_models.py): 2 layers, d_model 8, 2 heads of
    head_dim 4 (RoPE, RMSNorm, SwiGLU), random weights, seed 0."""
    return tiny_decoder(0, vocab_size=vocab_size, max_seq_len=max_seq_len)


def workload() -> list[tuple[int, int]]:
    """(prompt length, output length) of each request, uniform in the ranges, seeded."""
    rng = random.Random(WORKLOAD_SEED)
    return [(rng.randint(*PROMPT_RANGE), rng.randint(*OUTPUT_RANGE)) for _ in range(WORKLOAD_SIZE)]


def first_fit(sizes: list[int], pool: int) -> list[tuple[int, int, int]]:
    """Contiguous reservations placed in arrival order into an empty pool of `pool` slots (first
    fit: each at the lowest free offset) until one does not fit: (request, start, size) of those
    placed. The baseline that paging replaces; not part of the engine."""
    placed, end = [], 0
    for i, size in enumerate(sizes):
        if end + size > pool:
            break
        placed.append((i, end, size))
        end += size
    return placed


def reservations_at(lengths: list[tuple[int, int]], snapshot: int) -> tuple[list[list], list[int]]:
    """Contiguous reservations when every request has produced `snapshot` tokens: one row per
    unfinished request (request, prompt, answer, reserved, holding K/V, reserved for later,
    never used) and the totals of the last four columns."""
    rows, total = [], [0, 0, 0, 0]
    for i, (p, o) in enumerate(lengths):
        if o <= snapshot:
            continue  # already finished and freed at the snapshot
        reserved, held = p + MAX_TOKENS_CAP, p + snapshot
        later, never = o - snapshot, MAX_TOKENS_CAP - o
        rows.append([i, p, o, reserved, held, later, never])
        for j, value in enumerate((reserved, held, later, never)):
            total[j] += value
    return rows, total


def fragmentation(
    lengths: list[tuple[int, int]], pool: int
) -> tuple[list[int], list[tuple[int, int, int]], list[tuple[int, int]]]:
    """Reservation sizes, the first-fit placements into a contiguous pool of `pool` slots, and
    the free gaps (start, size) once the two placed requests with the shortest answers finish."""
    sizes = [p + MAX_TOKENS_CAP for p, _ in lengths]
    placed = first_fit(sizes, pool)
    finishing = sorted(placed, key=lambda item: lengths[item[0]][1])[:2]
    end = sum(size for _, _, size in placed)
    holes = sorted([(start, size) for _, start, size in finishing] + [(end, pool - end)])
    return sizes, placed, holes


def measured_run(
    tok: CharTokenizer, block_size: int = MEASURED_BLOCK_SIZE
) -> tuple[list[list], list[float], list[tuple[int, int]], list[float]]:
    """The workload through the real engine (tiny model with GPT-2's context): rows sampled
    every SAMPLE_EVERY steps, the waste after every step, the workload, and after every step
    the waste contiguous reservations (prompt + MAX_TOKENS_CAP per unfinished request) would
    have for the same slots holding K/V."""
    lengths = workload()
    model = tiny_model(tok.vocab_size, max_seq_len=CONTEXT)
    blocks = sum(-(-(p + o) // block_size) for p, o in lengths)
    llm = LLM(model, None, block_size=block_size, num_blocks=blocks,
              max_num_seqs=WORKLOAD_SIZE, max_num_batched_tokens=4096)  # fmt: skip
    rng = random.Random(WORKLOAD_SEED + 1)
    for i, (p, o) in enumerate(lengths):
        prompt = [rng.randrange(tok.vocab_size) for _ in range(p)]
        llm.add_request(str(i), prompt, SamplingParams(temperature=0.0, max_tokens=o,
                                                       ignore_eos=True))  # fmt: skip
    rows, waste, contiguous = [], [], []
    while llm.has_unfinished():
        llm.step()
        stats = llm.stats()
        if stats.kv_slots_allocated == 0:
            continue
        waste.append(stats.kv_waste)
        reserved = sum(lengths[int(request)][0] + MAX_TOKENS_CAP for request in llm.requests)
        contiguous.append(1 - stats.kv_slots_used / reserved)
        if stats.num_steps % SAMPLE_EVERY == 1:
            rows.append([stats.num_steps, stats.num_running, stats.kv_slots_used,
                         stats.blocks_used, stats.kv_slots_allocated, stats.kv_waste])  # fmt: skip
    return rows, waste, lengths, contiguous


def waste_figure(waste: list[float], contiguous: list[float], block_size: int):
    """The engine's measured waste after every step beside contiguous reservations'."""
    return line_figure(
        "paged_attention", "waste",
        f"Share of reserved KV slots holding nothing, after every engine step of the measured "
        f"run: paged (block_size {block_size}, the engine's stats()) against contiguous "
        f"reservations of prompt + {MAX_TOKENS_CAP} slots for the same unfinished requests.",
        range(1, len(waste) + 1), {f"paged, block_size {block_size}": waste,
                                   "contiguous reservations": contiguous},
        "engine step", "share of reserved slots wasted", title="Paged vs contiguous KV waste",
    )  # fmt: skip
