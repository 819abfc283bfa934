"""`llm-internals train-tokenizer`: train byte-level BPE on a corpus and save it."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from rich.table import Table

from llm_internals.console import console, progress
from llm_internals.data import CORPORA, corpus
from llm_internals.data.corpus import iter_text_blocks
from llm_internals.errors import LLMInternalsError
from llm_internals.tokenizer import PATTERNS, train_bpe
from llm_internals.tokenizer.pretokenize import get_pretokenizer
from llm_internals.tokenizer.stats import bytes_per_token, longest_tokens, show_token
from llm_internals.tokenizer.training_common import TIE_BREAKS

FORMATS = ("own", "hf", "tiktoken")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "train-tokenizer",
        help="train a byte-level BPE tokenizer on a corpus and save it",
        description="Pre-tokenize the corpus with a regex, then learn BPE merges until the "
        "vocabulary (256 bytes + merges + special tokens) reaches --vocab-size. Prints the time, "
        "the compression ratio (bytes per token) and the longest tokens.",
    )
    p.add_argument(
        "--corpus",
        default="shakespeare",
        help=f"corpus name ({', '.join(CORPORA)}) or a UTF-8 file / folder of .txt files "
        "(streamed, never read whole) (default: %(default)s)",
    )
    p.add_argument(
        "--vocab-size", type=int, default=8192, help="total vocabulary size (default: %(default)s)"
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path("tokenizer.json"),
        help="file to write (default: %(default)s)",
    )
    p.add_argument(
        "--format",
        choices=FORMATS,
        default="own",
        help="own (llm-internals JSON), hf (tokenizer.json), tiktoken (rank file) "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--pattern",
        default="gpt2",
        help=f"pre-tokenization regex: {', '.join(PATTERNS)} or a custom pattern "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--special",
        action="append",
        default=None,
        metavar="TOKEN",
        help="special token to reserve (repeatable; default <|endoftext|>)",
    )
    p.add_argument(
        "--tie-break",
        choices=TIE_BREAKS,
        default="hf",
        help="which of several equally frequent pairs is merged first: hf (the merges of HF "
        "tokenizers' BpeTrainer) or lexicographic (the greatest pair of token byte strings, "
        "the rule of Stanford CS336's BPE assignment) (default: %(default)s)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # The tokenizer built at the end must cover every text: check the pattern before training.
    get_pretokenizer(args.pattern, must_cover=True)
    if args.corpus in CORPORA:
        source = text = corpus(args.corpus)
    else:  # a file or folder: training streams it; compression is measured on its first MB
        source = Path(args.corpus)
        text = next(iter_text_blocks(source), "")
    if not text:
        raise LLMInternalsError(
            f"corpus {args.corpus} is empty: nothing to train on", hint="give a file with text"
        )
    specials = ["<|endoftext|>"] if args.special is None else args.special
    if args.format == "tiktoken" and specials:
        console.print("[dim]note: tiktoken rank files hold no special tokens[/dim]")
    with progress() as bar:
        task = bar.add_task("merges", total=max(args.vocab_size - 256 - len(specials), 0))

        def on_progress(done: int, planned: int) -> None:
            if done % 64 == 0 or done == planned:
                bar.update(task, completed=done)

        started = time.perf_counter()
        tok = train_bpe(
            source,
            args.vocab_size,
            pattern=args.pattern,
            special_tokens=specials,
            tie_break=args.tie_break,
            on_progress=on_progress,
        )
        seconds = time.perf_counter() - started
        bar.update(task, completed=len(tok.merges))
    if args.format == "own":
        tok.save(args.out)
    elif args.format == "hf":
        tok.to_hf(args.out)
    elif args.format == "tiktoken":
        tok.to_tiktoken(args.out)
    else:  # argparse restricts choices; kept for direct callers
        raise LLMInternalsError(f"unknown format {args.format!r}")
    table = Table(title=f"tokenizer trained on {args.corpus}", title_justify="left")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_row("training time", f"{seconds:.2f} s")
    table.add_row("merges learned", f"{len(tok.merges):,}")
    table.add_row("vocab size", f"{tok.vocab_size:,}")
    table.add_row("special tokens", ", ".join(tok.special_tokens) or "none")
    sample = "" if source is text else ", first MB"
    table.add_row(f"compression (bytes per token{sample})", f"{bytes_per_token(tok, text):.3f}")
    table.add_row("saved to", f"{args.out} ({args.format})")
    console.print(table)
    longest = Table(title="longest tokens", title_justify="left")
    longest.add_column("id", justify="right")
    longest.add_column("bytes", justify="right")
    longest.add_column("token")
    for token_id, token in longest_tokens(tok, 10):
        longest.add_row(str(token_id), str(len(token)), show_token(token))
    console.print(longest)
    return 0
