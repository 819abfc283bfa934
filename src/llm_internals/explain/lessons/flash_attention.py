"""Lesson "flash-attention": attention computed block by block, never writing the N x N matrix.

Every number comes from the real code: `layers.attention.scaled_dot_product_attention` (the
materialised path) and `layers.flash_attention` (the tiled path) run under a recorder, with their
`FlashCounters`; `layers.flash_io` (the IO model, published GPU figures); `layers.cpu_caches`
(this CPU's caches); matmul shapes and saved-tensor hooks around the real passes;
wall-clock timing of the materialised steps on this machine (one thread). The FlashAttention-3
figures are published figures, stated as such.
"""

from __future__ import annotations

import torch

from llm_internals.explain.flash_runs import (
    loop_order_bytes,
    online_softmax_run,
    recap_run,
    recomputation_costs,
    saved_bytes_curve,
    standard_step_rows,
    tiling_run,
)
from llm_internals.explain.flash_tables import (
    FA3_PUBLISHED,
    FA3_SOURCE,
    block_pair_table,
    gpu_memory_table,
    io_limit_table,
    io_table,
)
from llm_internals.explain.inputs import LessonInput
from llm_internals.explain.lesson import Lesson, Section, Step, Table
from llm_internals.explain.registry import LessonInfo
from llm_internals.layers.cpu_caches import read_cpu_caches
from llm_internals.layers.flash_io import GPUS, paper_block_sizes

INFO = LessonInfo(
    name="flash-attention",
    title="Flash attention: exact attention without the N x N matrix",
    summary="Why standard attention is bound by memory traffic, tiling and the online softmax, "
    "recomputation in the backward pass, FlashAttention 2 and 3, and the memory it saves.",
)

RECAP_N, RECAP_D = 6, 4
TIMED_N, TIMED_D, TIMED_REPEATS = 512, 64, 5
GRID_N, GRID_BLOCK = 10, 4
ROW_SCORES = (0.5, 2.0, -1.0, 3.0, 1.0, 0.0, 2.5, -0.5)  # one query's 8 scores
ROW_BLOCK = 3  # key blocks of 3, 3 and 2 scores
INPUTS = (
    LessonInput("block", "key block size (online softmax)", ROW_BLOCK, minimum=1,
                maximum=len(ROW_SCORES), help="keys per block in the one-row example"),
)  # fmt: skip
ROW_VALUES = (1.0, -2.0, 0.5, 4.0, -1.0, 3.0, 2.0, 0.0)
SMALL = dict(n=128, d=16, heads=2, block=32)  # recomputation and loop-order examples
IO_SIZES = (1024, 4096, 16384)
IO_D, IO_BYTES = 64, 2  # head dim 64, fp16/bf16 on the GPU
CURVE_SIZES = (64, 128, 256, 512)
CURVE_BLOCK = 128
PARTITION = dict(heads=8, n=8192, block=128)  # batch 1


def _section_recap() -> Section:
    weights, output_shape = recap_run(RECAP_N, RECAP_D)
    return Section(
        "Quick recap: standard attention",
        [
            Step(
                f"The real `scaled_dot_product_attention` on {RECAP_N} tokens of head dim "
                f"{RECAP_D}: every query meets every key, so the scores and the softmax weights "
                "are N x N matrices, written to memory in full, while the inputs and the output "
                "are only N x d.",
                formula="S = Q K^T / sqrt(d);  P = softmax(S) (per row);  O = P V",
                values={
                    "weights P (N x N)": weights,
                    "row sums of P": weights.sum(-1),
                    "output O shape": output_shape,
                },
            )
        ],
    )


def _section_why_slow() -> Section:
    n, d = TIMED_N, TIMED_D
    rows = standard_step_rows(n, d, TIMED_REPEATS)
    return Section(
        "Why standard attention is slow",
        [
            Step(
                f"For N = {n}, d = {d} (fp32, one head, one thread, best of {TIMED_REPEATS}): "
                f"each matmul does {rows[0][3]} FLOPs per byte it moves (2 N^2 d FLOPs for "
                "N^2 + 2 N d elements); the softmax less than one (5 operations per score, 8 "
                "bytes moved per score: read S, write P), so its speed is set by memory, not "
                "arithmetic. Measured on this machine just now: the softmax runs at "
                f"{rows[1][5]} GFLOP/s, the matmuls at {rows[0][5]} and {rows[2][5]}. (Our "
                "written-out softmax, layers/softmax.py, even moves more than the ideal 8 bytes "
                "per score: row max, subtract, exp, row sum and divide are 5 passes over S.)",
                formula="arithmetic intensity = FLOPs / bytes moved;  softmax: 5 N^2 / 8 N^2",
                values={
                    "steps": Table(
                        ["step", "FLOPs", "bytes moved", "FLOPs/byte", "ms", "GFLOP/s"], rows
                    ),  # fmt: skip
                },
            )
        ],
    )


def _section_gpu_memory() -> Section:
    caches = read_cpu_caches()
    cpu = [[c.label, c.kind, c.size_bytes // 1024] for c in caches.caches]
    return Section(
        "How GPU memory works: HBM and SRAM",
        [
            Step(
                "A GPU has two memories that matter here: HBM, tens of GB off the chip, and "
                "SRAM, a few hundred KB inside each streaming multiprocessor (SM): about 10x "
                "faster (19 TB/s against 1.5-2 TB/s on A100, the FlashAttention paper's "
                "estimate) but thousands of times smaller in total. Published figures (sources in "
                "`layers/flash_io.py`). The last column is how many FLOPs a kernel must do per "
                "byte it reads from HBM to keep the tensor cores busy; the softmax does less "
                "than 1.",
                formula="ridge point = peak FLOP/s / HBM bytes/s",
                values={
                    "published figures": gpu_memory_table(GPUS),
                    "sources": "; ".join(f"{g.name}: {g.source}" for g in GPUS),
                },
            ),
            Step(
                "A CPU has the same shape: DRAM is the slow memory, the caches the fast one. "
                f"This machine's data caches, read from the OS ({caches.source}):",
                values={"caches": Table(["level", "type", "KiB"], cpu) if cpu else "unknown"},
            ),
        ],
    )


def _section_core_idea() -> Section:
    gpu = GPUS[0]
    b_r, b_c = paper_block_sizes(gpu.sram_bytes_per_sm, IO_D, IO_BYTES)
    return Section(
        "The core idea: never write S to HBM",
        [
            Step(
                "Load blocks of Q, K and V into SRAM, compute that block of scores, fold it into "
                "the output right there, and move on. S and P never leave the chip, so slow "
                "memory sees only Q, K, V and O (several times over). The paper's block sizes "
                f"for an SRAM of M elements ({gpu.name}: {gpu.sram_bytes_per_sm // 1024} KiB, "
                f"d = {IO_D}, 2-byte elements): B_c = ceil(M / 4d) = {b_c}, B_r = min(B_c, d) "
                f"= {b_r}. Bytes per head from `layers.flash_io` (forward pass), and the time "
                "they take at the published HBM bandwidth:",
                formula="standard: Theta(N d + N^2)   tiled: Theta(N^2 d^2 / M)",
                values={
                    f"per head on {gpu.name}": io_table(gpu, IO_SIZES, IO_D, IO_BYTES, b_r, b_c)
                },
            )
        ],
    )


def _section_tiling() -> Section:
    counters, pairs = tiling_run(GRID_N, RECAP_D, GRID_BLOCK)
    return Section(
        "Tiling: attention in blocks",
        [
            Step(
                f"The real `flash_attention` on {GRID_N} tokens, causal, blocks of {GRID_BLOCK} "
                f"queries x {GRID_BLOCK} keys (the last block is shorter). Each computed cell is "
                "one small matmul in fast memory; with a causal mask, blocks whose every key "
                "comes after every query are skipped without being loaded.",
                values={
                    "block pairs, as recorded (flash.pair)": block_pair_table(
                        pairs, GRID_N, GRID_BLOCK
                    ),
                    "computed": counters.blocks_computed,
                    "skipped": counters.blocks_skipped,
                },
            )
        ],
    )


def _section_online_softmax(block_size: int = ROW_BLOCK) -> Section:
    scores = torch.tensor(ROW_SCORES, dtype=torch.float64)
    v = torch.tensor(ROW_VALUES, dtype=torch.float64)[:, None]
    rows, out, lse = online_softmax_run(ROW_SCORES, v, block_size)
    full = torch.softmax(scores, 0)
    from_lse = torch.exp(scores - lse[0])
    return Section(
        "Online softmax: one row, block by block",
        [
            Step(
                f"One query with the {len(ROW_SCORES)} scores {list(ROW_SCORES)} (d = 1, scale "
                f"1, so S = K), keys in blocks of {block_size}. After each block the real "
                "forward pass keeps only the running max m and the running sum l of exp(s - m); "
                "when a larger score arrives, the old sum is rescaled by exp(m_old - m_new).",
                formula="m' = max(m, max_j s_j);  l' = exp(m - m') l + sum_j exp(s_j - m')",
                values={
                    "after each block (flash.m, flash.l)": Table(
                        ["key block", "scores", "m", "l"], rows
                    )
                },  # fmt: skip
            ),
            Step(
                "At the end L = m + log l is the log of the full softmax denominator, so "
                "exp(s - L) is exactly the softmax of the whole row, and the output equals the "
                "softmax-weighted average of the values, without ever holding the row at once.",
                formula="L = m + log l = log sum_j exp(s_j);  softmax(s)_j = exp(s_j - L)",
                values={
                    "L (flash)": float(lse[0]),
                    "logsumexp of the full row": float(torch.logsumexp(scores, 0)),
                    "exp(s - L)": from_lse,
                    "softmax of the full row": full,
                    "output (flash)": float(out[0, 0]),
                    "softmax . values": float(full @ v[:, 0]),
                },
                decimals=6,
            ),
        ],
    )


def _section_recomputation() -> Section:
    n, d, heads, block = SMALL["n"], SMALL["d"], SMALL["heads"], SMALL["block"]
    kept, flops, pairs = recomputation_costs(n, d, heads, block)
    rows = [[path, kept[path], flops[path]] for path in kept]
    return Section(
        "Recomputation in the backward pass",
        [
            Step(
                "The backward pass needs P. Standard attention keeps it (and more) from the "
                "forward pass: N^2 per head. Flash attention keeps only Q, K, V, O and the "
                "log-sum-exp L (N per head) and rebuilds each block of P = exp(S - L) when it "
                "needs it: one extra Q K^T matmul, 2 N^2 d FLOPs, on top of the 4 N^2 d of the "
                "forward and 8 N^2 d of the backward matmuls. Bytes autograd keeps, measured with "
                "saved-tensor hooks on the real passes; matmul FLOPs of forward + backward: "
                "materialised 2 + 4 matmuls of N x N x d, tiled 2 per block pair forward and 5 "
                f"per block pair backward, pairs as counted by FlashCounters ({pairs[0]} and "
                f"{pairs[1]}); N = {n}, d = {d}, "
                f"{heads} heads, blocks of {block}, fp32.",
                formula="forward 4 N^2 d;  backward 8 N^2 d (+ 2 N^2 d recomputing S)",
                values={
                    "forward + backward": Table(["path", "bytes kept", "matmul FLOPs"], rows),
                    "memory saved (x)": round(kept["materialised"] / kept["tiled"], 1),
                    "FLOPs added (x)": round(flops["tiled"] / flops["materialised"], 3),
                },
            )
        ],
    )


def _section_flash2() -> Section:
    n, d, heads, block = SMALL["n"], SMALL["d"], SMALL["heads"], SMALL["block"]
    rows, pairs = loop_order_bytes(n, d, heads, block)
    rescale = [["fa1", 3 * pairs * block * d * heads], ["fa2", (pairs * block + n) * d * heads]]
    gpu = GPUS[0]
    heads_n, n_big, block_big = PARTITION["heads"], PARTITION["n"], PARTITION["block"]
    work = [["fa1 (batch x heads)", heads_n],
            ["fa2 (batch x heads x query blocks)", heads_n * -(-n_big // block_big)]]  # fmt: skip
    return Section(
        "Flash Attention 2",
        [
            Step(
                "FA1 loops over key blocks outside and query blocks inside, so O, m and l go "
                "back to slow memory after every block pair; FA2 swaps the loops: each query "
                "block's output stays on chip until it is finished. Counted by the real loops "
                f"(FlashCounters, forward, N = {n}, d = {d}, {heads} heads, causal, blocks of "
                f"{block}) beside the IO model's prediction:",
                values={
                    "bytes": Table(
                        ["order", "read", "written", "model read", "model written"], rows
                    )
                },  # fmt: skip
            ),
            Step(
                "Fewer non-matmul FLOPs: FA1 keeps O normalised, rescaling it at every block pair "
                "(2 multiplies and an add per element); FA2 keeps it unnormalised (1 multiply "
                f"per element per pair) and divides by l once per row. With the {pairs} computed "
                "pairs above:",
                formula="FA1: 3 x pairs x B_r x d   FA2: pairs x B_r x d + N x d   (per head)",
                values={"elementwise operations on O": Table(["order", "operations"], rescale)},
            ),
            Step(
                "Work partitioning: FA1 can only give each (batch, head) to one SM (its outer "
                "loop writes every query block's O); FA2's query blocks are independent, so they "
                f"run in parallel too. For batch 1, {heads_n} heads, N = {n_big}, blocks of "
                f"{block_big} on an "
                f"{gpu.name} with {gpu.sms} SMs:",
                values={"independent work items": Table(["order", "items"], work)},
            ),
        ],
    )


def _section_flash3() -> Section:
    h100 = GPUS[1]
    return Section(
        "Flash Attention 3 (Hopper)",
        [
            Step(
                "On H100, FlashAttention-3 overlaps what FA2 does in sequence: producer warps "
                "load tiles asynchronously (TMA) while consumer warpgroups compute (warp "
                "specialisation); the softmax of one warpgroup overlaps the matmuls of another "
                "(ping-pong) and, within a warpgroup, of the next block (two-stage pipelining); "
                "FP8 matmuls with one scale per block and a random orthogonal rotation of Q and K "
                "to spread outliers (incoherent processing). Published figures, not measured "
                f"here ({FA3_SOURCE}):",
                values={
                    "published": Table(["what", "reported"], [list(r) for r in FA3_PUBLISHED]),
                    f"740 TFLOP/s as a share of the {h100.name} 16-bit peak": round(
                        740e12 / h100.peak_flops_16bit, 3
                    ),
                },
            )
        ],
    )


def _section_impact() -> Section:
    rows = saved_bytes_curve(CURVE_SIZES, SMALL["d"], SMALL["heads"], CURVE_BLOCK)
    return Section(
        "Advantages and impact",
        [
            Step(
                "Memory grows linearly in N instead of quadratically, one of the things that made "
                "training on 32k- and 128k-token contexts practical; and fewer bytes moved makes "
                "attention faster on GPUs although it does more FLOPs. Measured on the real "
                f"passes: bytes kept for the backward pass, d = {SMALL['d']}, {SMALL['heads']} "
                "heads, fp32 (x per doubling: 4 is quadratic, 2 linear). "
                "`benchmarks/flash_attention.py` measures peak memory up to N = 16k against torch "
                "SDPA.",
                values={
                    "bytes kept for backward": Table(
                        ["N", "materialised", "tiled", "materialised x", "tiled x"], rows
                    )
                },
            ),
            Step(
                "Bytes moved shrink too, by a factor the IO model bounds: standard attention "
                "moves ~4 N^2 elements per head, FA1 with the paper's blocks ~12 N^2 d^2 / M, so "
                "for long sequences the saving tends to M / 3d^2: the larger the SRAM per SM "
                f"against d^2, the larger the gain (d = {IO_D}, {IO_BYTES}-byte elements).",
                formula="4 N^2 / (12 N^2 d^2 / M) = M / (3 d^2)",
                values={"limit of standard / tiled bytes": io_limit_table(GPUS, IO_D, IO_BYTES)},
            ),
        ],
    )


def build(block: int = ROW_BLOCK) -> Lesson:
    return Lesson(
        name=INFO.name,
        title=INFO.title,
        summary=INFO.summary,
        sections=[
            _section_recap(),
            _section_why_slow(),
            _section_gpu_memory(),
            _section_core_idea(),
            _section_tiling(),
            _section_online_softmax(block),
            _section_recomputation(),
            _section_flash2(),
            _section_flash3(),
            _section_impact(),
        ],
    )
