"""The explain path: record what library code computes, then render it as a lesson.

The names below are imported on first use (PEP 562), so that listing lessons or parsing the
command line does not import torch (which `llm_internals.trace` needs).
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "Lesson": "llm_internals.explain.lesson",
    "Section": "llm_internals.explain.lesson",
    "Step": "llm_internals.explain.lesson",
    "Table": "llm_internals.explain.lesson",
    "Recording": "llm_internals.trace",
    "is_recording": "llm_internals.trace",
    "record": "llm_internals.trace",
    "recording": "llm_internals.trace",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
