"""The lesson registry: which lessons exist, in curriculum order, and how to build one.

Each lesson module in `llm_internals.explain.lessons` defines `INFO` (a LessonInfo) and
`build() -> Lesson`; `LESSON_MODULES` in that package lists them in teaching order. Modules are
imported only when listed or built.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from llm_internals.errors import LLMInternalsError
from llm_internals.explain.lesson import Lesson


@dataclass(frozen=True)
class LessonInfo:
    name: str
    title: str
    summary: str


def _modules():
    from llm_internals.explain.lessons import LESSON_MODULES

    return [importlib.import_module(f"llm_internals.explain.lessons.{m}") for m in LESSON_MODULES]


def list_lessons() -> list[LessonInfo]:
    """All registered lessons in curriculum order."""
    return [module.INFO for module in _modules()]


def get_lesson(name: str) -> Lesson:
    """Build the lesson called `name` (runs the real library code it explains)."""
    for module in _modules():
        if module.INFO.name == name:
            return module.build()
    known = ", ".join(info.name for info in list_lessons())
    raise LLMInternalsError(f"unknown lesson {name!r}", hint=f"known lessons: {known}")
