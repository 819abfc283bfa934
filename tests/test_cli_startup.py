"""`llm-internals --help` and `llm-internals lessons` start fast: they import no model code
(torch, transformers, numpy), which is what took seconds. Asserting on the imported modules is
deterministic where a time bound on a loaded machine is not; the listing they print is checked
against the modules themselves."""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys

from llm_internals.cli import COMMAND_MODULES, build_parser, command_summary
from llm_internals.explain.lessons import LESSON_MODULES
from llm_internals.explain.registry import info_from_source

HEAVY = ("torch", "transformers", "numpy", "safetensors", "tokenizers")

PROBE = """
import contextlib, io, json, sys
from llm_internals.cli import main
with contextlib.redirect_stdout(io.StringIO()) as out:
    code = main(sys.argv[1:])
print(json.dumps({"code": code, "out": out.getvalue(), "modules": sorted(sys.modules)}))
"""


def _probe(*argv: str) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def test_lessons_imports_no_model_code():
    lessons = _probe("lessons")
    assert lessons["code"] == 0 and "flash-attention" in lessons["out"]
    assert not [m for m in lessons["modules"] if m.split(".")[0] in HEAVY]


def test_help_in_a_subprocess_imports_no_model_code():
    code = (
        "import sys\nfrom llm_internals.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        f"print([m for m in sys.modules if m.split('.')[0] in {HEAVY!r}])"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "explain one concept step by step" in result.stdout
    assert result.stdout.splitlines()[-1] == "[]"


def test_summaries_read_from_source_equal_the_real_parsers():
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    helps = {choice.dest: choice.help for choice in sub._choices_actions}
    for module in COMMAND_MODULES:
        name, help_text = command_summary(module)
        assert helps[name] == help_text, module


def test_lesson_infos_read_from_source_equal_the_modules():
    for module in LESSON_MODULES:
        info = info_from_source(module)
        imported = importlib.import_module(f"llm_internals.explain.lessons.{module}").INFO
        assert info is None or info == imported, module
    assert all(info_from_source(m) for m in ("softmax", "scaling", "gqa"))
