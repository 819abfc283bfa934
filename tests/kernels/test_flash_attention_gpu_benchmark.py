"""benchmarks/flash_attention_gpu.py (Triton kernel vs SDPA flash, run by scripts/gpu_check.sh)
without a GPU: its FLOP count and shapes, its table and arguments, and one tiny measurement
through the whole timing code (fp32, Triton's interpreter on the CPU; compiled on a GPU)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from rich.console import Console

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench():
    """The script as a module (benchmarks/ is not a package)."""
    path = ROOT / "benchmarks" / "flash_attention_gpu.py"
    spec = importlib.util.spec_from_file_location("flash_attention_gpu", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_counts_the_tutorials_flops_on_16k_tokens(bench):
    # Triton tutorial: 4 B H N^2 D forward, x0.5 causal; backward 2.5x forward (fwd+bwd 3.5x)
    assert bench.attention_flops(1, 2, 1024, 64, False, "forward") == 2 * 2 * 2 * 1024**2 * 64
    assert bench.attention_flops(1, 2, 1024, 64, True, "forward") == 2 * 2 * 1024**2 * 64
    assert bench.attention_flops(3, 4, 512, 128, True, "forward+backward") == (
        3.5 * 0.5 * 4 * 3 * 4 * 512**2 * 128
    )
    for n in bench.parse_args([]).lengths:
        for d in (64, 128):
            batch, heads = bench.shape_for(n, d)
            assert batch * n == 16384 and heads * d == 2048


def test_table_and_arguments(bench):
    row = dict(head_dim=64, n=2048, batch=8, heads=32, causal=True, passes="forward",
               max_abs_diff=0.0078, triton_ms=2.0, sdpa_ms=1.0, triton_tflops=100.0,
               sdpa_tflops=200.0, triton_tokens_per_s=8.2e6, sdpa_tokens_per_s=1.64e7)  # fmt: skip
    console = Console(record=True, width=250)
    console.print(bench.table([row], "GPU"))
    text = console.export_text()
    assert "Triton / SDPA speed" in text and "0.50x" in text and "8 x 32" in text
    assert "100.0" in text and "1.64e+07" in text and "7.8e-03" in text
    args = bench.parse_args(["--lengths", "512", "--head-dims", "128", "--causal", "no"])
    assert (args.lengths, args.head_dims, args.causal, args.reps) == ([512], [128], "no", 10)
    for bad in (["--head-dims", "48"], ["--causal", "maybe"], ["--reps", "0"]):
        with pytest.raises(SystemExit):
            bench.parse_args(bad)


def test_without_a_gpu_it_says_so(bench, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert bench.main(["--lengths", "1024"]) == 2
    assert "needs a CUDA GPU" in capsys.readouterr().out


def test_one_tiny_measurement_runs_the_timing_code(bench, kernel):
    """Both passes of both implementations on the same input, rows complete and consistent.
    fp32 on the CPU (the interpreter cannot do bf16); bf16 on a GPU (SDPA's flash backend has
    no fp32 there), where the two differ by bf16 rounding of O."""
    gpu = torch.cuda.is_available()
    device, dtype = (
        (torch.device("cuda"), torch.bfloat16) if gpu else (torch.device("cpu"), torch.float32)
    )
    rows = bench.measure(20, 16, True, 1, device, dtype, shape=(1, 2), warmup=0)
    assert [r["passes"] for r in rows] == ["forward", "forward+backward"]
    for r in rows:
        assert r["max_abs_diff"] < (3e-2 if gpu else 1e-5)
        flops = bench.attention_flops(1, 2, 20, 16, True, r["passes"])
        for name in ("triton", "sdpa"):
            seconds = r[f"{name}_ms"] / 1e3
            assert seconds > 0
            assert r[f"{name}_tflops"] == pytest.approx(flops / seconds / 1e12)
            assert r[f"{name}_tokens_per_s"] == pytest.approx(20 / seconds)
