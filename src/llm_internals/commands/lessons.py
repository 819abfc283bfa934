"""`llm-internals lessons`: list the lessons in curriculum order."""

from __future__ import annotations

import argparse

from rich.table import Table

from llm_internals.console import console
from llm_internals.explain.registry import list_lessons


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "lessons",
        help="list the lessons (run one with `explain NAME`)",
        description="List every lesson with its title and a one-line summary.",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    table = Table(title="Lessons (llm-internals explain NAME)", title_justify="left")
    for column in ("name", "title", "summary"):
        table.add_column(column)
    for info in list_lessons():
        table.add_row(info.name, info.title, info.summary)
    console.print(table)
    return 0
