"""benchmarks/flash_attention.py runs: its memory probe (a fresh process per case) sees the
materialised path's N x N matrices and not the tiled path's, and its time and block-size tables
print for tiny sizes. The figures themselves are not checked here (they are not tests)."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import pytest
from rich.console import Console

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "flash_attention.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("flash_attention_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def args(**overrides) -> argparse.Namespace:
    return argparse.Namespace(**{"heads": 8, "dim": 64, "block": 64, "causal": False, **overrides})


def test_memory_probe_separates_quadratic_from_linear(bench):
    n = 512  # one N x N fp32 matrix of 8 heads: 8 MiB
    tiled, materialised = bench.measure_in_one_process(("tiled", "materialised"), n, args())
    assert materialised["method"] == tiled["method"]
    assert materialised["peak_bytes"] >= 8 * n * n * 4  # at least one copy of the scores
    assert tiled["peak_bytes"] < materialised["peak_bytes"] / 3


def test_time_and_block_tables_print(bench):
    console = Console(width=200, record=True)
    bench.time_table(args(heads=2, dim=16, block=32), (64,), 1, console)
    bench.block_table(args(heads=2, dim=16), 64, (16, 32), 1, console)
    text = console.export_text()
    assert "forward + backward" in text and "tiled / materialised" in text
    assert "IO model MiB moved" in text and "fits in" in text
