"""Shared by the explain tests: rendering a lesson as terminal text, and the 80-column check."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from llm_internals.explain.lesson import Lesson
from llm_internals.explain.render import render_terminal

BOX_DRAWING = {chr(c) for c in range(0x2500, 0x2580)}


def terminal_text(lesson: Lesson, width: int) -> str:
    console = Console(file=io.StringIO(), width=width, color_system=None, highlight=False)
    render_terminal(lesson, console)
    return console.file.getvalue()


def check_fits_without_cuts(lesson: Lesson, width: int = 80) -> None:
    """What the narrow render shows is what a 1000-column one shows, only wrapped: no line
    wider than `width`, no ellipsis added, not one character lost."""
    narrow, wide = terminal_text(lesson, width), terminal_text(lesson, 1000)
    too_long = [line for line in narrow.splitlines() if len(line) > width]
    assert not too_long, too_long[:3]
    assert narrow.count("…") == wide.count("…"), "a cell was cut with an ellipsis"

    def content(text: str) -> list[str]:
        return sorted(c for c in text if not c.isspace() and c not in BOX_DRAWING)

    assert content(narrow) == content(wide), "characters were lost at the narrow width"


@pytest.fixture
def assert_fits_without_cuts():
    return check_fits_without_cuts


@pytest.fixture(name="terminal_text")
def terminal_text_fixture():
    return terminal_text
