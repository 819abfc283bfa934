"""`llm-internals tokenize --tokenizer FILE TEXT`: show how a tokenizer cuts a text."""

from __future__ import annotations

import argparse
import codecs
from pathlib import Path

from rich.text import Text

from llm_internals.console import console
from llm_internals.errors import LLMInternalsError
from llm_internals.tokenizer import Tokenizer

COLORS = ("on dark_blue", "on dark_green", "on dark_red", "on purple4", "on dark_orange3")
SEPARATOR = "|"  # between pieces when the output is not a terminal (no colours there)
VISIBLE = str.maketrans({" ": "␣", "\n": "↵", "\t": "⇥", "\r": "␍", SEPARATOR: "¦"})

# A piece may hold part of a UTF-8 character (a byte-level token): show such bytes as <0xE4>.
codecs.register_error(
    "llm_internals_hex_bytes",
    lambda e: ("".join(f"<0x{b:02X}>" for b in e.object[e.start : e.end]), e.end),
)


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "tokenize",
        help="show the tokens and ids a tokenizer gives a text (colored pieces)",
        description="Encode TEXT (or --file) with a tokenizer file: our JSON, an HF "
        "tokenizer.json (or its folder) or a tiktoken rank file. In a terminal each token is "
        f"shown on its own background color; otherwise pieces are separated by '{SEPARATOR}' "
        f"(a '{SEPARATOR}' inside a piece shows as '¦'). ␣ marks a space, ↵ a newline, ⇥ a "
        "tab, ␍ a carriage return, <0xE4> a byte that is part of a UTF-8 character.",
    )
    p.add_argument("text", nargs="?", help="text to encode")
    p.add_argument("--tokenizer", type=Path, required=True, help="tokenizer file or folder")
    p.add_argument("--file", type=Path, help="encode this UTF-8 file instead of TEXT")
    specials = p.add_mutually_exclusive_group()
    specials.add_argument(
        "--allow-special",
        action="store_true",
        help="encode special-token text such as <|endoftext|> as the special token's id "
        "(default: such text is an error)",
    )
    specials.add_argument(
        "--special-as-text",
        action="store_true",
        help="encode special-token text as ordinary text, byte by byte (default: an error)",
    )
    p.add_argument(
        "--pattern",
        default=None,
        help="pre-tokenization pattern for tiktoken rank files, which carry none: gpt2, gpt4 "
        "(cl100k) or a regular expression (default: gpt4)",
    )
    p.set_defaults(func=run)


def piece_text(token: bytes) -> str:
    """A token's bytes as readable text: UTF-8, with whitespace and partial characters visible."""
    return token.decode("utf-8", errors="llm_internals_hex_bytes").translate(VISIBLE)


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
    if args.allow_special:
        ids = tok.encode(text, allowed_special="all")
    elif args.special_as_text:
        ids = tok.encode(text, disallowed_special=())
    else:
        ids = tok.encode(text)
    pieces = [piece_text(tok.token_bytes(i)) for i in ids]
    if console.is_terminal:
        shown = Text()
        for n, piece in enumerate(pieces):
            shown.append(piece, style=COLORS[n % len(COLORS)])
        console.print(shown)
    else:
        console.print(SEPARATOR.join(pieces), markup=False, highlight=False, soft_wrap=True)
    console.print("ids: " + " ".join(map(str, ids)), highlight=False, soft_wrap=True)
    n_bytes = len(text.encode("utf-8"))
    console.print(
        f"{len(ids)} tokens, {n_bytes} bytes, {n_bytes / max(len(ids), 1):.2f} bytes per token; "
        f"vocabulary of {tok.vocab_size:,} ({len(tok.merges):,} merges, "
        f"{len(tok.special_tokens)} special token{'' if len(tok.special_tokens) == 1 else 's'})",
        style="dim",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    return 0
