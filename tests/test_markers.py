"""Test-suite conventions: tests that need the corpus download carry the `network` mark."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _collected(*args: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", *args, "tests/tokenizer"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return {line for line in out.splitlines() if "::" in line}


def test_corpus_tests_are_marked_network():
    everything = _collected()
    offline = _collected("-m", "not network")
    corpus_test = "tests/tokenizer/test_encode.py::test_corpus_encoding_equals_tiktoken_and_hf"
    assert corpus_test in everything
    assert corpus_test not in offline
    assert offline < everything
