"""Built lessons, remembered: building one runs real library code (up to a few seconds), and a
learner flips between a few input values, so the app keeps the last LESSON_CACHE_SIZE lessons by
(name, parsed inputs). Only one lesson is built at a time (serial.py); its figures are registered
so the figure route serves files that a lesson produced and nothing else."""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from llm_internals.explain.inputs import parse_inputs
from llm_internals.explain.registry import LessonInfo, get_lesson, lesson_inputs, list_lessons
from llm_internals.explain.render import lesson_to_dict
from llm_internals.web.errors import ApiError
from llm_internals.web.serial import RECORDING_LOCK

LESSON_CACHE_SIZE = 32


class LessonCache:
    """A small LRU of lesson JSON dicts keyed by (name, inputs), plus the figure files seen."""

    def __init__(self, size: int = LESSON_CACHE_SIZE) -> None:
        # read once, here: list_lessons() parses the lesson sources, and CPython 3.11's
        # ast.parse is not safe in two threads at once ("AST constructor recursion depth
        # mismatch"), which the server's worker threads would otherwise risk
        self.infos: tuple[LessonInfo, ...] = tuple(list_lessons())
        self.size = size
        self.entries: OrderedDict[tuple[str, tuple], dict[str, Any]] = OrderedDict()
        self.figures: dict[tuple[str, str], Path] = {}  # (lesson, file name) -> path
        self.builds = 0  # how many lessons were actually built (tests read it)
        self.lock = threading.Lock()  # guards entries and figures (server worker threads)

    def known(self, name: str) -> None:
        """404 (not 400) for a lesson that does not exist, with the known names as the hint."""
        names = [info.name for info in self.infos]
        if name not in names:
            raise ApiError(404, f"unknown lesson {name!r}",
                           hint=f"known lessons: {', '.join(names)}")  # fmt: skip

    def lesson(self, name: str, given: dict[str, str]) -> dict[str, Any]:
        """The JSON dict of lesson `name` built with `given` (raw strings, parsed here)."""
        self.known(name)
        declared = lesson_inputs(name)
        values = parse_inputs(declared, given, name)
        key = (name, tuple(sorted(values.items())))
        cached = self._cached(key)  # a cached lesson does not wait for another one's build
        if cached is not None:
            return cached
        with RECORDING_LOCK:
            cached = self._cached(key)  # built meanwhile by the request we waited for
            if cached is not None:
                return cached
            lesson = get_lesson(name, values)
            data = lesson_to_dict(lesson, declared)
        with self.lock:
            self.builds += 1
            for section in lesson.sections:
                for step in section.steps:
                    for figure in step.figures:
                        self.figures[(name, figure.path.name)] = Path(figure.path)
            self.entries[key] = data
            while len(self.entries) > self.size:
                self.entries.popitem(last=False)
        return data

    def _cached(self, key: tuple[str, tuple]) -> dict[str, Any] | None:
        with self.lock:
            if key not in self.entries:
                return None
            self.entries.move_to_end(key)
            return self.entries[key]

    def figure(self, name: str, file: str) -> Path:
        """The PNG `file` that lesson `name` drew; 404 for anything it did not."""
        path = self.figures.get((name, file))
        if path is None or not path.is_file():
            raise ApiError(404, f"lesson {name!r} drew no figure {file!r}",
                           hint="load the lesson first: its page lists its figures")  # fmt: skip
        return path
