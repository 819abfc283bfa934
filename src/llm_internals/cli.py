"""The `llm-internals` command line: one subcommand per module in `llm_internals.commands`.

Errors a user can fix (LLMInternalsError) print as one line plus a hint; anything else prints
one line too, and `--debug` shows the full traceback.

Only the command being run is imported: most command modules import torch (seconds), so
`--help` reads every command's name and one-line help from its module's source instead
(`command_summary`), and `llm-internals lessons` imports no model code at all.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import importlib.util
import sys
from collections.abc import Iterable
from pathlib import Path

from rich.markup import escape

from llm_internals import __version__
from llm_internals.console import console
from llm_internals.errors import LLMInternalsError

# Subcommands in the order `--help` lists them (modules in llm_internals/commands/).
COMMAND_MODULES: tuple[str, ...] = (
    "tour",
    "lessons",
    "explain",
    "explore",
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


def _literal(node: ast.AST | None, constants: dict[str, str]) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Name):
        return constants.get(node.id)
    return None


def command_summary(module: str) -> tuple[str, str]:
    """(command name, one-line help) of `llm_internals.commands.<module>`, read from the
    `subparsers.add_parser(NAME, help=...)` call in its source, without importing it."""
    spec = importlib.util.find_spec(f"llm_internals.commands.{module}")
    assert spec is not None and spec.origin is not None, module
    tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    constants = {
        target.id: node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
        for target in node.targets
        if isinstance(target, ast.Name) and isinstance(node.value.value, str)
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "add_parser":
            name = _literal(node.args[0] if node.args else None, constants)
            help_text = next(
                (_literal(k.value, constants) for k in node.keywords if k.arg == "help"), None
            )
            if name and help_text is not None:
                return name, help_text
    raise RuntimeError(f"llm_internals/commands/{module}.py: no add_parser(NAME, help=...) call")


def _chosen_command(argv: list[str]) -> str | None:
    """The first word on the line that is not an option (global options take no values)."""
    return next((a for a in argv if not a.startswith("-")), None)


def build_parser(load: Iterable[str] | None = None) -> argparse.ArgumentParser:
    """The full parser. With `load` (command names), only those commands' modules are imported;
    the others are listed, with their help, as placeholders that `--help` can show."""
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
    wanted = None if load is None else set(load)
    for module in COMMAND_MODULES:
        command, help_text = command_summary(module) if wanted is not None else (None, "")
        if wanted is None or command in wanted:
            importlib.import_module(f"llm_internals.commands.{module}").add_parser(subparsers)
        else:
            subparsers.add_parser(command, help=help_text)
    for command in subparsers.choices.values():
        command.formatter_class = HelpFormatter
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv  # accepted anywhere on the line, not only before the command
    argv = [a for a in argv if a != "--debug"]
    parser = build_parser(load=[_chosen_command(argv) or ""])
    args = parser.parse_args(argv)
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
