"""The lesson registry: which lessons exist, in curriculum order, and how to build one.

Each lesson module in `llm_internals.explain.lessons` defines `INFO` (a LessonInfo) and
`build() -> Lesson`; `LESSON_MODULES` in that package lists them in teaching order. Modules are
imported only when built: listing reads each `INFO = LessonInfo(...)` from the module's source
(importing a lesson imports torch, seconds; `llm-internals lessons` should take a fraction of
one), and imports the module only when its INFO is not written with plain strings.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

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


def info_from_source(module: str) -> LessonInfo | None:
    """The INFO of lesson `module` read from its source without importing it; None unless it is
    `INFO = LessonInfo(name=..., title=..., summary=...)` with plain string literals."""
    spec = importlib.util.find_spec(f"llm_internals.explain.lessons.{module}")
    if spec is None or spec.origin is None:
        return None
    for node in ast.parse(Path(spec.origin).read_text(encoding="utf-8")).body:
        if not (isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "INFO"):
            continue
        call = node.value
        if not isinstance(call, ast.Call) or call.args:
            return None
        fields = {k.arg: k.value for k in call.keywords}
        if set(fields) != {"name", "title", "summary"} or not all(
            isinstance(v, ast.Constant) and isinstance(v.value, str) for v in fields.values()
        ):
            return None
        return LessonInfo(**{k: v.value for k, v in fields.items()})  # type: ignore[attr-defined]
    return None


def list_lessons() -> list[LessonInfo]:
    """All registered lessons in curriculum order."""
    from llm_internals.explain.lessons import LESSON_MODULES

    return [
        info_from_source(m) or importlib.import_module(f"llm_internals.explain.lessons.{m}").INFO
        for m in LESSON_MODULES
    ]


def get_lesson(name: str) -> Lesson:
    """Build the lesson called `name` (runs the real library code it explains)."""
    for module in _modules():
        if module.INFO.name == name:
            return module.build()
    known = ", ".join(info.name for info in list_lessons())
    raise LLMInternalsError(f"unknown lesson {name!r}", hint=f"known lessons: {known}")
