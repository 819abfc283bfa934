"""The tables of the `flash-attention` lesson built from published GPU figures and the IO model
(layers/flash_io.py), the block-pair grid recorded from the real tiled pass, and the published
FlashAttention-3 figures (stated as published, not measured).
"""

from __future__ import annotations

from llm_internals.explain.lesson import Table
from llm_internals.layers.flash_io import PAPER_STANDARD, Accelerator, Tiling, standard_io, tiled_io

FA3_PUBLISHED = (
    ("forward speed vs FlashAttention-2 (FP16)", "1.5-2.0x"),
    ("FP16 forward, peak", "up to 740 TFLOP/s"),
    ("FP8 forward, peak", "close to 1.2 PFLOP/s"),
    ("backward vs FlashAttention-2", "1.5-1.75x"),
    ("FP8 error with incoherent processing", "2.6x lower RMSE than plain FP8 attention"),
    ("ablation: warp specialisation, two-stage pipelining", "about 12-14% each"),
)
FA3_SOURCE = (
    "Shah et al. 2024, FlashAttention-3 (v1 abstract and ablation), as summarised in the "
    "project's spec (flash-attention.md 5.3)"
)


def gpu_memory_table(gpus: tuple[Accelerator, ...]) -> Table:
    """HBM and SRAM of each GPU, and the FLOPs per HBM byte a kernel needs to be compute-bound."""
    rows = [
        [g.name, round(g.hbm_bytes / 1e9), g.hbm_bytes_per_s / 1e12, g.sram_bytes_per_sm // 1024,
         g.sms, round(g.sms * g.sram_bytes_per_sm / 2**20, 1), g.peak_flops_16bit / 1e12,
         round(g.peak_flops_16bit / g.hbm_bytes_per_s)]
        for g in gpus
    ]  # fmt: skip
    return Table(
        [
            "GPU",
            "HBM GB",
            "HBM TB/s",
            "SRAM KiB/SM",
            "SMs",
            "SRAM MiB total",
            "16-bit TFLOP/s",
            "FLOPs/byte to be compute-bound",
        ],
        rows,
    )  # fmt: skip


def io_table(
    gpu: Accelerator, sizes: tuple[int, ...], d: int, nbytes: int, b_r: int, b_c: int
) -> Table:
    """Forward-pass bytes per head, standard and FA1-tiled, and their time at HBM speed."""
    rows = []
    for n in sizes:
        std = standard_io(n, n, d, nbytes, passes=PAPER_STANDARD).total_bytes
        tiled = tiled_io(Tiling(n, n, d, nbytes, b_r, b_c), "fa1").total_bytes
        rows.append([n, round(std / 2**20, 1), round(tiled / 2**20, 1), round(std / tiled, 1),
                     round(std / gpu.hbm_bytes_per_s * 1e6, 1),
                     round(tiled / gpu.hbm_bytes_per_s * 1e6, 1)])  # fmt: skip
    return Table(
        [
            "N",
            "standard MiB",
            "tiled MiB",
            "standard / tiled",
            "standard us at HBM speed",
            "tiled us",
        ],
        rows,
    )  # fmt: skip


def io_limit_table(gpus: tuple[Accelerator, ...], d: int, nbytes: int) -> Table:
    """The long-sequence limit M / 3d^2 of standard over tiled bytes, per GPU."""
    return Table(
        ["GPU", "M (elements)", "M / 3d^2"],
        [
            [
                g.name,
                g.sram_bytes_per_sm // nbytes,
                round(g.sram_bytes_per_sm // nbytes / (3 * d**2), 2),
            ]
            for g in gpus
        ],
    )  # fmt: skip


def block_pair_table(pairs: list, n: int, block: int) -> Table:
    """The recorded (query block, key block, status) pairs as a grid of computed / skipped."""
    blocks = -(-n // block)
    grid = [[""] * blocks for _ in range(blocks)]
    for i, j, status in pairs:
        grid[i][j] = "computed" if status == "computed" else "skipped"
    rows = [[f"queries {i * block}-{min((i + 1) * block, n) - 1}", *grid[i]]
            for i in range(blocks)]  # fmt: skip
    columns = ["", *(f"keys {j * block}-{min((j + 1) * block, n) - 1}"
                     for j in range(blocks))]  # fmt: skip
    return Table(columns, rows)
