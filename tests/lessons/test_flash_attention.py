"""The flash-attention lesson's numbers, recomputed independently: weights by torch.softmax,
FLOPs and bytes of the standard passes by hand, the paper's block sizes and both IO counts in
closed form, the tiling grid from `causal_mask`, m and l of the online softmax from prefixes of
the row, bytes kept for backward from the shapes of Q, K, V, O and L, matmul FLOPs from the
shapes of every matmul that ran (a dispatch mode), and the loop orders' bytes in closed form."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from llm_internals.explain.flash_runs import qkv
from llm_internals.explain.lesson import Table
from llm_internals.explain.lessons import flash_attention as lesson_module
from llm_internals.explain.registry import list_lessons
from llm_internals.layers.attention import scaled_dot_product_attention
from llm_internals.layers.cpu_caches import read_cpu_caches
from llm_internals.layers.flash_attention import flash_attention
from llm_internals.layers.masks import causal_mask

SMALL = lesson_module.SMALL
F32 = 4


@pytest.fixture(scope="module")
def lesson():
    return {s.title: s.steps for s in lesson_module.build().sections}


def rows(table: Table) -> list[list]:
    assert isinstance(table, Table)
    return table.rows


def test_registered_after_the_attention_lessons():
    names = [info.name for info in list_lessons()]
    assert names.index("flash-attention") > names.index("gqa")
    assert list_lessons()[names.index("flash-attention")] == lesson_module.INFO


def test_recap_weights_are_the_softmax_of_the_scaled_scores(lesson):
    q, k, _ = qkv(lesson_module.RECAP_N, lesson_module.RECAP_D)
    expected = torch.softmax(q[0, 0] @ k[0, 0].T / math.sqrt(lesson_module.RECAP_D), -1)
    values = lesson["Quick recap: standard attention"][0].values
    torch.testing.assert_close(values["weights P (N x N)"], expected)


def test_why_slow_flops_and_bytes(lesson):
    n, d = lesson_module.TIMED_N, lesson_module.TIMED_D
    table = rows(lesson["Why standard attention is slow"][0].values["steps"])
    # Algorithm 0: S = QK^T reads Q, K and writes S; softmax reads and writes S; PV reads S, V
    # and writes O
    expected = [(2 * n * n * d, (2 * n * d + n * n) * F32), (5 * n * n, 2 * n * n * F32),
                (2 * n * n * d, (n * n + 2 * n * d) * F32)]  # fmt: skip
    assert [(r[1], r[2]) for r in table] == expected
    for row in table:
        assert row[3] == round(row[1] / row[2], 2) and row[4] > 0
    assert table[1][3] < 1 < table[0][3]  # the softmax moves more bytes than it does FLOPs


def test_gpu_and_cpu_memory_tables(lesson):
    steps = lesson["How GPU memory works: HBM and SRAM"]
    for row, gpu in zip(rows(steps[0].values["published figures"]), lesson_module.GPUS,
                        strict=True):  # fmt: skip
        assert row[5] == round(gpu.sms * gpu.sram_bytes_per_sm / 2**20, 1)
        assert row[7] == round(gpu.peak_flops_16bit / gpu.hbm_bytes_per_s)
    caches = read_cpu_caches()
    shown = steps[1].values["caches"]
    if caches.caches:
        assert [r[2] * 1024 for r in rows(shown)] == [c.size_bytes for c in caches.caches]


def test_core_idea_io_in_closed_form(lesson):
    gpu, d, b = lesson_module.GPUS[0], lesson_module.IO_D, lesson_module.IO_BYTES
    m = gpu.sram_bytes_per_sm // b
    b_c = math.ceil(m / (4 * d))
    b_r = min(b_c, d)
    table = rows(lesson["The core idea: never write S to HBM"][0].values[f"per head on {gpu.name}"])
    for row in table:
        n = row[0]
        standard = (4 * n * d + 4 * n * n) * b  # reads 3Nd + 2N^2, writes Nd + 2N^2
        t_c = math.ceil(n / b_c)
        assert n % b_r == 0
        # FA1: Q, O read and O written per key block, K, V read and O initialised once (in the
        # input dtype); m, l read and written per key block, initialised, read at the end and
        # L written (fp32)
        tiled = (3 * t_c * n * d + 3 * n * d) * b + (4 * t_c * n + 5 * n) * F32
        assert row[1:4] == [round(standard / 2**20, 1), round(tiled / 2**20, 1),
                            round(standard / tiled, 1)]  # fmt: skip
        assert row[4] == round(standard / gpu.hbm_bytes_per_s * 1e6, 1)


def test_tiling_grid_is_the_causal_mask_in_blocks(lesson):
    n, block = lesson_module.GRID_N, lesson_module.GRID_BLOCK
    values = lesson["Tiling: attention in blocks"][0].values
    mask = causal_mask(n)
    blocks = math.ceil(n / block)
    expected = [
        ["computed" if mask[i * block : (i + 1) * block, j * block : (j + 1) * block].any()
         else "skipped" for j in range(blocks)]
        for i in range(blocks)
    ]  # fmt: skip
    assert [r[1:] for r in rows(values["block pairs, as recorded (flash.pair)"])] == expected
    assert values["computed"] == blocks * (blocks + 1) // 2
    assert values["skipped"] == blocks * (blocks - 1) // 2


def test_online_softmax_row(lesson):
    scores = torch.tensor(lesson_module.ROW_SCORES, dtype=torch.float64)
    values = torch.tensor(lesson_module.ROW_VALUES, dtype=torch.float64)
    steps = lesson["Online softmax: one row, block by block"]
    table = rows(steps[0].values["after each block (flash.m, flash.l)"])
    block = lesson_module.ROW_BLOCK
    assert len(table) == math.ceil(len(scores) / block)
    for j, row in enumerate(table):
        seen = scores[: (j + 1) * block]
        assert row[2] == float(seen.max())
        assert row[3] == pytest.approx(float(torch.exp(seen - seen.max()).sum()), rel=1e-12)
    end = steps[1].values
    assert end["L (flash)"] == pytest.approx(float(torch.logsumexp(scores, 0)), rel=1e-12)
    torch.testing.assert_close(end["exp(s - L)"], torch.softmax(scores, 0), rtol=1e-12, atol=0)
    assert end["output (flash)"] == pytest.approx(float(torch.softmax(scores, 0) @ values))


class MatmulFlops(TorchDispatchMode):
    """2 x M x K x N per matrix product that runs (mm, bmm, baddbmm, in place or not)."""

    def __init__(self) -> None:
        super().__init__()
        self.flops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name in ("mm", "bmm", "baddbmm", "baddbmm_", "addmm", "addmm_"):
            a, b = (args[0], args[1]) if name in ("mm", "bmm") else (args[1], args[2])
            self.flops += 2 * a.numel() * b.shape[-1]
        return func(*args, **(kwargs or {}))


def test_recomputation_memory_and_flops(lesson):
    n, d, heads, block = SMALL["n"], SMALL["d"], SMALL["heads"], SMALL["block"]
    values = lesson["Recomputation in the backward pass"][0].values
    (mat_name, mat_kept, mat_flops), (tiled_name, tiled_kept, tiled_flops) = rows(
        values["forward + backward"]
    )
    assert (mat_name, tiled_name) == ("materialised", "tiled")
    # the tiled pass keeps exactly its inputs, O and L; the materialised one at least P
    assert tiled_kept == (4 * n * d * heads + n * heads) * F32
    assert heads * n * n * F32 <= mat_kept
    assert (mat_flops, tiled_flops) == (12 * n * n * d * heads, 14 * n * n * d * heads)
    # the FLOPs agree with the matmuls that actually run
    q, k, v = (x.requires_grad_() for x in qkv(n, d, heads))

    def tiled(*x):
        return flash_attention(*x, block_q=block, block_k=block)

    for fn, shown in ((scaled_dot_product_attention, mat_flops),
                      (tiled, tiled_flops)):  # fmt: skip
        with MatmulFlops() as counter:
            fn(q, k, v).sum().backward()
        assert counter.flops == shown
    assert values["FLOPs added (x)"] == round(14 / 12, 3)


def test_flash2_bytes_rescales_and_work_items(lesson):
    n, d, heads, block = SMALL["n"], SMALL["d"], SMALL["heads"], SMALL["block"]
    steps = lesson["Flash Attention 2"]
    t = n // block
    pairs = t * (t + 1) // 2  # causal: the diagonal and below
    q_bytes, stat = n * d * heads * F32, n * heads * F32
    per_pair_rows, per_pair_stat = block * d * heads * F32, block * heads * F32
    expected = {
        "fa1": [2 * q_bytes + pairs * (2 * per_pair_rows + 2 * per_pair_stat) + 2 * stat,
                q_bytes + 2 * stat + pairs * (per_pair_rows + 2 * per_pair_stat) + stat],
        "fa2": [q_bytes + pairs * 2 * per_pair_rows, q_bytes + stat],
    }  # fmt: skip
    for row in rows(steps[0].values["bytes"]):
        assert row[1:3] == expected[row[0]] and row[3:5] == expected[row[0]]
    rescale = dict(rows(steps[1].values["elementwise operations on O"]))
    assert rescale == {"fa1": 3 * pairs * block * d * heads,
                       "fa2": (pairs * block + n) * d * heads}  # fmt: skip
    part = lesson_module.PARTITION
    work = [r[1] for r in rows(steps[2].values["independent work items"])]
    assert work == [part["heads"], part["heads"] * math.ceil(part["n"] / part["block"])]


def test_flash3_share_of_peak(lesson):
    values = lesson["Flash Attention 3 (Hopper)"][0].values
    assert values["740 TFLOP/s as a share of the H100 SXM5 80GB 16-bit peak"] == round(740 / 989, 3)


def test_impact_curve_is_linear_for_tiled_and_quadratic_for_materialised(lesson):
    d, heads = SMALL["d"], SMALL["heads"]
    table = rows(lesson["Advantages and impact"][0].values["bytes kept for backward"])
    assert [r[0] for r in table] == list(lesson_module.CURVE_SIZES)
    for row in table:
        assert row[2] == (4 * row[0] * d * heads + row[0] * heads) * F32
    for row in table[1:]:
        assert row[4] == 2.0 and 3.5 < row[3] <= 4.0


def test_impact_io_limit(lesson):
    table = rows(lesson["Advantages and impact"][1].values["limit of standard / tiled bytes"])
    # A100: 192 KiB of 2-byte elements = 98,304; / (3 x 64^2) = 8
    assert table[0][1:] == [98304, 8.0]
    assert table[1][1:] == [228 * 1024 // 2, round(228 * 512 / (3 * 64**2), 2)]
