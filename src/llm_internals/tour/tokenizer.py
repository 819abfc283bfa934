"""Tour stage "tokenizer": train byte-level BPE on the corpus and show what it learned."""

from __future__ import annotations

import time

from rich.table import Table

from llm_internals.tokenizer import train_bpe
from llm_internals.tokenizer.stats import bytes_per_token, longest_tokens, show_token
from llm_internals.tour import TourContext

VOCAB_SIZE = 8192
FIRST_MERGES = 12


def run(ctx: TourContext) -> None:
    text = ctx.train_text or ctx.text
    started = time.perf_counter()
    tok = train_bpe(text, VOCAB_SIZE, special_tokens=("<|endoftext|>",))
    seconds = time.perf_counter() - started
    ctx.console.print(
        f"Trained byte-level BPE to {tok.vocab_size:,} tokens ({len(tok.merges):,} merges, GPT-2 "
        f"pre-tokenization) on {len(text):,} characters in {seconds:.1f} s."
    )
    merges = Table(title="the first merges (most frequent pairs first)", title_justify="left")
    merges.add_column("rank", justify="right")
    merges.add_column("left")
    merges.add_column("right")
    merges.add_column("new token")
    for rank, (left, right) in enumerate(tok.merges[:FIRST_MERGES]):
        merges.add_row(
            str(rank),
            show_token(tok.vocab[left]),
            show_token(tok.vocab[right]),
            show_token(tok.vocab[left] + tok.vocab[right]),
        )
    ctx.console.print(merges)
    held_out = ctx.val_text or text
    n_bytes = len(held_out.encode("utf-8"))
    ratio = bytes_per_token(tok, held_out)
    table = Table(title="compression on held-out text", title_justify="left")
    table.add_column("tokenizer")
    table.add_column("tokens", justify="right")
    table.add_column("bytes per token", justify="right")
    table.add_row("character level", f"{len(held_out):,}", f"{n_bytes / len(held_out):.3f}")
    table.add_row(f"BPE {tok.vocab_size:,}", f"{round(n_bytes / ratio):,}", f"{ratio:.3f}")
    ctx.console.print(table)
    longest = ", ".join(show_token(t) for _, t in longest_tokens(tok, 5))
    ctx.console.print(f"Longest tokens: {longest}", markup=False)
    path = ctx.workdir / "tokenizer.json"
    tok.save(path)
    ctx.console.print(f"Saved to {path}.")
    ctx.artifacts["tokenizer"] = tok
