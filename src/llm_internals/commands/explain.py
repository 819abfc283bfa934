"""`llm-internals explain LESSON`: run a lesson's real code and show each step with its numbers."""

from __future__ import annotations

import argparse
import os
import sys

from rich.console import Console
from rich.pager import Pager

from llm_internals.console import console
from llm_internals.explain.inputs import LessonInput, parse_assignments
from llm_internals.explain.lesson import Lesson
from llm_internals.explain.registry import get_lesson, lesson_inputs
from llm_internals.explain.render import render_json, render_markdown, render_terminal


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "explain",
        help="explain one concept step by step with real numbers",
        description="Run the library code behind a lesson on a small deterministic input and "
        "show every step. `llm-internals lessons` lists the names. In a terminal the lesson "
        "opens in a pager ($PAGER, else less) unless --no-pager is given.",
    )
    p.add_argument("lesson", metavar="LESSON", help="lesson name, e.g. softmax")
    p.add_argument(
        "--format",
        choices=("terminal", "markdown", "json"),
        default="terminal",
        help="terminal (default: rich tables), markdown (a document), json (web explorer input)",
    )
    p.add_argument(
        "--set",
        dest="assignments",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="change one of the lesson's inputs (repeatable), e.g. `explain scaling --set "
        "d_k=256`; `explain LESSON --inputs` lists them",
    )
    p.add_argument(
        "--inputs",
        action="store_true",
        help="list the lesson's editable inputs (name, default, limits) and exit",
    )
    p.add_argument(
        "--no-pager",
        action="store_true",
        help="print straight to the terminal instead of opening a pager (the pager is used "
        "only when stdout is a terminal)",
    )
    p.set_defaults(func=run)


def wants_pager(target: Console, no_pager: bool) -> bool:
    """Page only an interactive terminal, and not when the user said --no-pager."""
    return target.is_terminal and not no_pager


def show(lesson: Lesson, target: Console, paged: bool, pager: Pager | None = None) -> None:
    """Render the lesson to `target`, through a pager (rich's: the system pager) when `paged`.
    less is told to pass colours through (-R), to quit if the lesson fits one screen (-F) and
    to leave it on the screen (-X), unless $LESS says otherwise."""
    if not paged:
        render_terminal(lesson, target)
        return
    os.environ.setdefault("LESS", "-RFX")
    with target.pager(pager=pager, styles=True):
        render_terminal(lesson, target)


def print_inputs(name: str, declared: tuple[LessonInput, ...]) -> None:
    if not declared:
        console.print(f"lesson {name} takes no inputs")
        return
    for i in declared:
        limits = (
            f"one of {', '.join(map(str, i.choices))}"
            if i.choices is not None
            else f"{i.kind} in [{'' if i.minimum is None else f'{i.minimum:g}'}, "
            f"{'' if i.maximum is None else f'{i.maximum:g}'}]"
            if i.kind != "str"
            else f"text, up to {i.max_length} characters"
        )
        console.print(f"--set {i.name}=VALUE  {i.label} (default {i.default}; {limits}) {i.help}")


def run(args: argparse.Namespace) -> int:
    declared = lesson_inputs(args.lesson)
    if args.inputs:
        print_inputs(args.lesson, declared)
        return 0
    lesson = get_lesson(args.lesson, parse_assignments(args.assignments))
    if args.format == "terminal":
        show(lesson, console, wants_pager(console, args.no_pager))
    elif args.format == "markdown":
        sys.stdout.write(render_markdown(lesson))
    else:
        sys.stdout.write(render_json(lesson, declared))
    return 0
