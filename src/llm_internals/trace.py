"""Recording intermediate values from library code for the explain path.

Library code calls `record("scores", scores)` at the steps a learner should see. Outside a
`recording()` block this is a single truthiness check of a module-level list, so the hot paths of
training and inference pay nothing measurable. Inside one (or several nested ones), each active
recording receives a detached copy of the value, so later in-place updates cannot change it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

_active: list[Recording] = []


@dataclass(frozen=True)
class Record:
    """One named value captured while recording."""

    name: str
    value: Any
    note: str = ""


@dataclass
class Recording:
    """The records collected by one `recording()` block, in call order."""

    records: list[Record] = field(default_factory=list)

    def all(self, name: str) -> list[Any]:
        """Every value recorded under `name`, oldest first."""
        return [r.value for r in self.records if r.name == name]

    def get(self, name: str) -> Any:
        """The last value recorded under `name`; KeyError names what was recorded instead."""
        for r in reversed(self.records):
            if r.name == name:
                return r.value
        raise KeyError(f"nothing recorded as {name!r}; recorded: {sorted(self.names())}")

    def names(self) -> list[str]:
        """Distinct recorded names in first-seen order."""
        return list(dict.fromkeys(r.name for r in self.records))


def is_recording() -> bool:
    """True inside a `recording()` block: lets callers skip preparing costly values."""
    return bool(_active)


def record(name: str, value: Any, note: str = "") -> None:
    """Give `value` to every active recording under `name`; return at once when none is active."""
    if not _active:
        return
    if isinstance(value, torch.Tensor):
        value = value.detach().clone()
    entry = Record(name, value, note)
    for recording_ in _active:
        recording_.records.append(entry)


@contextmanager
def recording() -> Iterator[Recording]:
    """Collect everything `record` receives inside the block (nested blocks each get a copy)."""
    current = Recording()
    _active.append(current)
    try:
        yield current
    finally:
        _active.remove(current)
