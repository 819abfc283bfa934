"""`explain` pages a terminal (not a pipe, not with --no-pager), and what the pager receives is
the whole rendered lesson."""

from __future__ import annotations

import io

from rich.console import Console
from rich.pager import Pager

from llm_internals.cli import build_parser
from llm_internals.commands.explain import show, wants_pager
from llm_internals.explain.lesson import Lesson, Section, Step


class CapturingPager(Pager):
    def __init__(self) -> None:
        self.shown: list[str] = []

    def show(self, content: str) -> None:
        self.shown.append(content)


LESSON = Lesson("t", "A title", "a summary", [Section("First section", [Step("some text")])])


def test_pager_only_for_a_terminal_and_without_no_pager():
    tty = Console(file=io.StringIO(), force_terminal=True)
    pipe = Console(file=io.StringIO(), force_terminal=False)
    assert wants_pager(tty, no_pager=False)
    assert not wants_pager(tty, no_pager=True)
    assert not wants_pager(pipe, no_pager=False)
    args = build_parser(load=["explain"]).parse_args(["explain", "softmax", "--no-pager"])
    assert args.no_pager is True


def test_paged_lesson_goes_to_the_pager_whole():
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=80)
    pager = CapturingPager()
    show(LESSON, console, paged=True, pager=pager)
    assert out.getvalue() == ""
    (content,) = pager.shown
    assert "A title" in content and "First section" in content and "some text" in content
    show(LESSON, console, paged=False, pager=pager)
    assert "First section" in out.getvalue() and len(pager.shown) == 1
