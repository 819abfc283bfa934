"""`llm-internals tokenize --tokenizer FILE TEXT`: show how a tokenizer cuts a text."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.text import Text

from llm_internals.console import console
from llm_internals.errors import LLMInternalsError
from llm_internals.tokenizer import Tokenizer
from llm_internals.tokenizer.stats import show_token

COLORS = ("on dark_blue", "on dark_green", "on dark_red", "on purple4", "on dark_orange3")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "tokenize",
        help="show the tokens and ids a tokenizer gives a text (colored pieces)",
        description="Encode TEXT (or --file) with a tokenizer file: our JSON, an HF "
        "tokenizer.json (or its folder) or a tiktoken rank file. Each token is shown on its "
        "own background color; ␣ marks a space and ↵ a newline.",
    )
    p.add_argument("text", nargs="?", help="text to encode")
    p.add_argument("--tokenizer", type=Path, required=True, help="tokenizer file or folder")
    p.add_argument("--file", type=Path, help="encode this UTF-8 file instead of TEXT")
    p.add_argument(
        "--allow-special", action="store_true", help="encode special-token text as special ids"
    )
    p.add_argument("--pattern", default=None, help="pattern for tiktoken rank files")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.file is not None:
        try:
            text = args.file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise LLMInternalsError(f"{args.file}: cannot read as UTF-8 text ({e})") from None
    elif args.text is not None:
        text = args.text
    else:
        raise LLMInternalsError("nothing to tokenize", hint="give TEXT or --file PATH")
    tok = Tokenizer.load(args.tokenizer, pattern=args.pattern)
    ids = tok.encode(text, allowed_special="all" if args.allow_special else frozenset())
    pieces = Text()
    for n, token_id in enumerate(ids):
        pieces.append(show_token(tok.token_bytes(token_id)), style=COLORS[n % len(COLORS)])
    console.print(pieces)
    console.print("ids: " + " ".join(str(i) for i in ids), highlight=False, soft_wrap=True)
    n_bytes = len(text.encode("utf-8"))
    console.print(
        f"[dim]{len(ids)} tokens, {n_bytes} bytes, {n_bytes / max(len(ids), 1):.2f} bytes per "
        f"token ({tok!r})[/dim]"
    )
    return 0
