"""What a lesson is made of: sections of steps, each step some text, a formula and named values.

A lesson is built by running real library code under a recorder; these classes only hold the
result so that the renderers (terminal, Markdown, JSON) can show it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Table:
    """A small table of already-chosen values (numbers are formatted with the step's decimals)."""

    columns: list[str]
    rows: list[list[Any]]

    def __post_init__(self) -> None:
        for i, row in enumerate(self.rows):
            if len(row) != len(self.columns):
                raise ValueError(
                    f"table row {i} has {len(row)} cells but there are {len(self.columns)} columns"
                )


@dataclass
class Figure:
    """A picture the lesson drew (a PNG file written by explain/figures.py), with a caption.
    Markdown embeds it, the web explorer shows it, the terminal prints its path."""

    path: Path
    caption: str


@dataclass
class Step:
    """One thing to look at: a sentence or two, an optional formula, and the values it shows.

    `values` maps a display name to a torch.Tensor, numpy array, int, float, bool, str or Table.
    Tensors are shown as aligned tables with `decimals` decimals.
    """

    text: str
    formula: str | None = None
    values: dict[str, Any] = field(default_factory=dict)
    decimals: int = 4
    figures: list[Figure] = field(default_factory=list)


@dataclass
class Section:
    title: str
    steps: list[Step]


@dataclass
class Lesson:
    name: str
    title: str
    summary: str
    sections: list[Section]
    inputs: dict[str, Any] = field(default_factory=dict)  # the input values it was built with
