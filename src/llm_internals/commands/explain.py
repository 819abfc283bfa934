"""`llm-internals explain LESSON`: run a lesson's real code and show each step with its numbers."""

from __future__ import annotations

import argparse
import sys

from llm_internals.console import console
from llm_internals.explain.registry import get_lesson
from llm_internals.explain.render import render_json, render_markdown, render_terminal


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "explain",
        help="explain one concept step by step with real numbers",
        description="Run the library code behind a lesson on a small deterministic input and "
        "show every step. `llm-internals lessons` lists the names.",
    )
    p.add_argument("lesson", metavar="LESSON", help="lesson name, e.g. softmax")
    p.add_argument(
        "--format",
        choices=("terminal", "markdown", "json"),
        default="terminal",
        help="terminal (default: rich tables), markdown (a document), json (web explorer input)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    lesson = get_lesson(args.lesson)
    if args.format == "terminal":
        render_terminal(lesson, console)
    elif args.format == "markdown":
        sys.stdout.write(render_markdown(lesson))
    else:
        sys.stdout.write(render_json(lesson))
    return 0
