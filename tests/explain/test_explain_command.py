"""`llm-internals explain LESSON --format F` for every registered lesson and every format: the
command exits 0 and shows that lesson (its title and every section title; the JSON parses, has
the schema id and the sections in order; the terminal text fits 80 columns, no cell cut).
Each lesson is built once and rendered three times.
Lessons that read the real corpus are marked `network` (pip obtains it on first use); bpe, which
trains on all of it, also `slow`."""

from __future__ import annotations

import importlib
import json

import pytest

from llm_internals.cli import main
from llm_internals.commands import explain as explain_command
from llm_internals.explain.lessons import LESSON_MODULES
from llm_internals.explain.registry import get_lesson
from llm_internals.explain.render import JSON_SCHEMA

SLOW = {"bpe"}  # 15-30 s: trains tokenizers on the whole corpus


def _params():
    for module_name in LESSON_MODULES:
        module = importlib.import_module(f"llm_internals.explain.lessons.{module_name}")
        marks = [pytest.mark.network] if "lesson_corpus" in vars(module) else []
        marks += [pytest.mark.slow] if module.INFO.name in SLOW else []
        for fmt in ("terminal", "markdown", "json"):
            yield pytest.param(module.INFO.name, fmt, marks=marks, id=f"{module.INFO.name}-{fmt}")


@pytest.fixture(scope="module")
def built() -> dict:
    return {}


def _words(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize(("name", "fmt"), list(_params()))
def test_explain_every_lesson_in_every_format(
    name, fmt, built, monkeypatch, capsys, assert_fits_without_cuts
):
    def cached(lesson_name: str, inputs=None):
        assert not inputs  # the defaults: built once, shared by the three formats
        if lesson_name not in built:
            built[lesson_name] = get_lesson(lesson_name)
        return built[lesson_name]

    monkeypatch.setattr(explain_command, "get_lesson", cached)
    assert main(["explain", name, "--format", fmt]) == 0
    out = capsys.readouterr().out
    lesson = built[name]
    if fmt == "json":
        data = json.loads(out)
        assert data["schema"] == JSON_SCHEMA and data["name"] == name
        assert data["title"] == lesson.title
        assert [s["title"] for s in data["sections"]] == [s.title for s in lesson.sections]
        assert [len(s["steps"]) for s in data["sections"]] == [
            len(s.steps) for s in lesson.sections
        ]
    elif fmt == "markdown":
        assert out.startswith(f"# {lesson.title}\n")
        headings = [line[3:] for line in out.splitlines() if line.startswith("## ")]
        assert headings == [f"{i}. {s.title}" for i, s in enumerate(lesson.sections, 1)]
    else:
        shown = _words(out)
        assert _words(lesson.title) in shown
        for section in lesson.sections:
            assert _words(section.title) in shown, section.title
        assert_fits_without_cuts(lesson, width=80)
