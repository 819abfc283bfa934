"""The `llm-internals` command line: one subcommand per module in `llm_internals.commands`.

Errors a user can fix (LLMInternalsError) print as one line plus a hint; anything else prints
one line too, and `--debug` shows the full traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from rich.markup import escape

from llm_internals import __version__
from llm_internals.console import console
from llm_internals.errors import LLMInternalsError

# Subcommands in the order `--help` lists them (modules in llm_internals/commands/).
COMMAND_MODULES: tuple[str, ...] = (
    "tour",
    "lessons",
    "explain",
    "corpus",
    "train_tokenizer",
    "tokenize",
    "kv_memory",
    "train",
    "finetune",
    "generate",
    "serve",
    "quantize",
    "export_gguf",
    "perplexity",
)


class HelpFormatter(argparse.HelpFormatter):
    """Shows each option's default after its help, unless the help already says it or the
    default is empty (None, False, an empty list)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        help_text = action.help or ""
        default = action.default
        if (
            default in (None, False, [], argparse.SUPPRESS)
            or "default" in help_text.lower()
            or not action.option_strings
        ):
            return help_text
        return f"{help_text} (default: %(default)s)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llm-internals",
        description="LLM internals you can run, check and see. Start with `llm-internals tour`.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"llm-internals {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="show full tracebacks instead of one-line errors"
    )
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"llm_internals.commands.{name}").add_parser(subparsers)
    for command in subparsers.choices.values():
        command.formatter_class = HelpFormatter
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv  # accepted anywhere on the line, not only before the command
    parser = build_parser()
    args = parser.parse_args([a for a in argv if a != "--debug"])
    args.debug = debug
    if not hasattr(args, "func"):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/yellow]")
        return 130
    except LLMInternalsError as e:
        if args.debug:
            raise
        console.print(f"[bold red]error:[/bold red] {escape(e.message)}", soft_wrap=True)
        if e.hint:
            console.print(f"[bold]hint:[/bold] {escape(e.hint)}", soft_wrap=True)
        return 2
    except Exception as e:  # anything unexpected: still one line unless --debug
        if args.debug:
            raise
        console.print(
            f"[bold red]error:[/bold red] {type(e).__name__}: {escape(str(e))}", soft_wrap=True
        )
        console.print("[bold]hint:[/bold] run again with --debug for the full traceback")
        return 1


if __name__ == "__main__":
    sys.exit(main())
