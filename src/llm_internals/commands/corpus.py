"""`llm-internals corpus [NAME|PATH]`: obtain a corpus and describe it."""

from __future__ import annotations

import argparse
from collections import Counter

from rich.table import Table

from llm_internals.console import console
from llm_internals.data import CORPORA, corpus, corpus_home
from llm_internals.data.describe import describe_text


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "corpus",
        help="obtain a corpus and print its size, characters, lines and a sample",
        description="Obtain (download and cache, for named corpora) and describe a corpus. "
        f"Named corpora: {', '.join(CORPORA)}. Any UTF-8 text file or directory of .txt files "
        f"works too. Cache: $LLM_INTERNALS_HOME (now {corpus_home()}).",
    )
    p.add_argument(
        "source",
        nargs="?",
        default="shakespeare",
        metavar="NAME|PATH",
        help=f"a named corpus ({', '.join(CORPORA)}) or a UTF-8 text file or folder of .txt "
        "files (default: shakespeare)",
    )
    p.add_argument("--sample", type=int, default=400, help="characters of sample text to show")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    text = corpus(args.source)
    table = Table(title=f"corpus {args.source}", title_justify="left")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key, value in describe_text(text).items():
        table.add_row(key, f"{value:,}")
    common = Counter(text).most_common(10)
    table.add_row("most common", " ".join(repr(c)[1:-1] or "?" for c, _ in common))
    console.print(table)
    console.rule("sample")
    console.print(text[: args.sample], markup=False, highlight=False)
    return 0
