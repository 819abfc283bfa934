"""`--help` on every command: each option explains itself, lists its choices and shows its
default; every command named in the README exists."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from llm_internals.cli import build_parser

README = Path(__file__).resolve().parents[1] / "README.md"


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


@pytest.mark.parametrize("name", sorted(_commands()))
def test_every_option_has_help_and_shows_its_default(name):
    command = _commands()[name]
    text = command.format_help()
    for action in command._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        label = "/".join(action.option_strings) or action.dest
        assert action.help, f"{name} {label} has no help text"
        meaningful = action.default not in (None, False, [], argparse.SUPPRESS)
        if action.option_strings and meaningful:
            assert "default" in command._get_formatter()._get_help_string(action).lower(), label
        for choice in action.choices or ():
            assert str(choice) in text, f"{name} {label}: choice {choice!r} not listed"


def test_readme_flags_exist():
    commands = _commands()
    rows = re.findall(r"`llm-internals ([a-z-]+)([^`]*)`", README.read_text(encoding="utf-8"))
    assert rows
    for name, rest in rows:
        assert name in commands, f"README names a command that does not exist: {name}"
        known = {flag for action in commands[name]._actions for flag in action.option_strings}
        for flag in re.findall(r"(--[a-z][a-z-]*)", rest):
            assert flag in known, f"README: `{name} {flag}` is not an option of {name}"
