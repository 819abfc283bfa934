"""The lesson registry: which lessons exist, in curriculum order, and how to build one.

Each lesson module in `llm_internals.explain.lessons` defines `INFO` (a LessonInfo) and
`build() -> Lesson`; `LESSON_MODULES` in that package lists them in teaching order. A lesson that
takes inputs also defines `INPUTS` (explain/inputs.py) and `build(**values)`. Modules are
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
from typing import Any

from llm_internals.errors import LLMInternalsError
from llm_internals.explain.inputs import LessonInput, parse_inputs
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


def _module_for(name: str):
    for module in _modules():
        if module.INFO.name == name:
            return module
    known = ", ".join(info.name for info in list_lessons())
    raise LLMInternalsError(f"unknown lesson {name!r}", hint=f"known lessons: {known}")


def lesson_inputs(name: str) -> tuple[LessonInput, ...]:
    """The editable inputs lesson `name` declares (empty when it takes none)."""
    return tuple(getattr(_module_for(name), "INPUTS", ()))


def get_lesson(name: str, inputs: dict[str, Any] | None = None) -> Lesson:
    """Build the lesson called `name` (runs the real library code it explains), with `inputs`
    (name -> value or string) parsed and range-checked against the lesson's INPUTS."""
    module = _module_for(name)
    values = parse_inputs(tuple(getattr(module, "INPUTS", ())), inputs or {}, name)
    lesson = module.build(**values)
    lesson.inputs = values
    return lesson
