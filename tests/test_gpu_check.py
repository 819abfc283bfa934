"""scripts/gpu_check.sh and the `cuda` mark on a machine without a GPU: the script says so and
exits 0 at once; `pytest -m cuda` skips every CUDA test with one reason. The benchmark the script
runs works on the CPU (slow: about a minute)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_check.sh"


def _fake_nvidia_smi(tmp_path: Path) -> dict[str, str]:
    """An environment whose nvidia-smi finds no GPU (as on a machine with the driver tools but
    no device), whatever this machine has."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "nvidia-smi"
    fake.write_text("#!/bin/sh\necho 'No devices were found' >&2\nexit 6\n")
    fake.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "OUT": str(tmp_path / "out")}


def test_script_is_strict_bash():
    text = SCRIPT.read_text()
    assert text.startswith("#!/usr/bin/env bash") and "set -euo pipefail" in text
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


def test_without_a_gpu_the_script_says_so_and_exits_0(tmp_path):
    done = subprocess.run(["bash", str(SCRIPT)], env=_fake_nvidia_smi(tmp_path), cwd=tmp_path,
                          capture_output=True, text=True, timeout=30)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("gpu_check: no NVIDIA GPU here")
    assert not (tmp_path / "out").exists()  # it did nothing else


def test_cuda_tests_are_skipped_with_one_reason_where_torch_sees_no_gpu():
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # no GPU for the child, on any machine
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider", "-rs",
         "tests/test_cuda.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:]
    summary = done.stdout.strip().splitlines()[-1]
    assert "skipped" in summary and "passed" not in summary and "failed" not in summary
    assert "needs a CUDA GPU" in done.stdout


@pytest.mark.slow
def test_the_benchmark_runs_on_the_cpu(tmp_path):
    out = tmp_path / "figures.json"
    done = subprocess.run(
        [sys.executable, "benchmarks/on_device.py", "--device", "cpu", "--quick", "--reps", "1",
         "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    figures = json.loads(out.read_text())
    assert figures["device"] == "cpu" and len(figures["decode"]) == 4
    assert all(row["same_tokens"] for row in figures["decode"] if row["dtype"] == "float32")
    assert figures["serving"]["same_greedy_tokens"] == "6/6"
    first, last = figures["training"]["ours_loss"]
    assert last < first and figures["training"]["hf_loss"][1] < figures["training"]["hf_loss"][0]
