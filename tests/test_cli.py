"""The CLI as a user meets it: a real subprocess for --help and errors, main() for the rest."""

import json
import re
import subprocess
import sys

from llm_internals.cli import COMMAND_MODULES, main


def _run(*args):
    return subprocess.run(
        [sys.executable, "-m", "llm_internals", *args], capture_output=True, text=True, timeout=120
    )


def test_help_lists_every_subcommand_with_a_description():
    result = _run("--help")
    assert result.returncode == 0
    for name in COMMAND_MODULES:
        command = name.replace("_", "-")
        assert re.search(rf"^    {command}\b", result.stdout, re.M), command


def test_lessons_lists_softmax(capsys):
    assert main(["lessons"]) == 0
    assert "softmax" in capsys.readouterr().out


def test_explain_softmax_in_each_format(capsys):
    assert main(["explain", "softmax"]) == 0
    assert "Why subtract the max" in capsys.readouterr().out
    assert main(["explain", "softmax", "--format", "markdown"]) == 0
    assert capsys.readouterr().out.startswith("# Softmax")
    assert main(["explain", "softmax", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["name"] == "softmax"


def test_error_is_one_line_with_hint_and_no_traceback():
    result = _run("explain", "no-such-lesson")
    assert result.returncode == 2
    assert "Traceback" not in result.stdout + result.stderr
    assert "error: unknown lesson 'no-such-lesson'" in result.stdout
    assert "hint: known lessons:" in result.stdout


def test_debug_flag_shows_the_traceback_anywhere_on_the_line():
    result = _run("explain", "no-such-lesson", "--debug")
    assert result.returncode != 0
    assert "Traceback" in result.stderr and "LLMInternalsError" in result.stderr


def test_corpus_command_describes_a_local_file(tmp_path, capsys):
    path = tmp_path / "t.txt"
    path.write_text("ab\ncd\n")
    assert main(["corpus", str(path)]) == 0
    out = capsys.readouterr().out
    assert "characters" in out and "unique characters" in out and "ab" in out


def test_error_text_in_brackets_is_printed_not_eaten_as_markup(tmp_path):
    bad = tmp_path / "[model]"  # rich would swallow "[model]" as a style tag
    result = _run("generate", "--model", str(bad), "--prompt", "x")
    assert result.returncode == 2
    assert "[model]" in result.stdout + result.stderr
