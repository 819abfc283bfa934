"""benchmarks/speculative.py --quick runs end to end on tiny models it trains itself: every
speculative run (draft model and n-gram, generate and the paged engine) reproduces the target's
greedy tokens, the counters are consistent with the formula the table prints, the HF exports
exist, and distilling the draft brought it closer to the target. The speed figures are not
checked here (they are not tests)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "speculative.py"


def test_quick_run(tmp_path):
    out = tmp_path / "results.json"
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--cache-dir", str(tmp_path), "--gammas", "2",
         "--skip-hf", "--batches", "4", "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads(out.read_text())
    assert results["quick"] and "load average" in run.stdout
    rows = {(r["method"], r["gamma"]): r for r in results["batch1"]}
    assert set(rows) == {("target alone", 0), ("draft", 2), ("n-gram", 2)}
    for key in (("draft", 2), ("n-gram", 2)):
        row = rows[key]
        assert row["same_tokens"] is True
        alpha, gamma = row["alpha"], row["mean_gamma"]
        assert 0 < gamma <= 2 and 1 <= row["tokens_per_forward"] <= 3
        expected = (1 - alpha ** (gamma + 1)) / (1 - alpha) if alpha < 1 else gamma + 1
        assert abs(row["expected_tokens_per_forward"] - expected) < 1e-9
    engine = results["engine"]
    assert {(r["batch"], r["method"]) for r in engine} == {
        (4, "target alone"),
        (4, "draft"),
        (4, "n-gram"),
    }
    assert all(r["same_tokens"] for r in engine)
    for role in ("target", "draft-distilled"):  # the draft it used: distilled from the target
        (hf_folder,) = tmp_path.glob(f"{role}-*-hf")
        assert (hf_folder / "config.json").exists() and (hf_folder / "model.safetensors").exists()
    distilled = results["models"]["draft"]["distillation"]
    assert distilled["steps"] == 10 and distilled["after"]["val_kl"] < distilled["before"]["val_kl"]
