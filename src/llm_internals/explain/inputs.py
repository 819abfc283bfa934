"""Lesson inputs: the few numbers or words a learner may change before a lesson is rebuilt.

A lesson module may declare `INPUTS = (LessonInput(...), ...)`; its `build(**values)` then takes
one keyword per input (each defaulting to the input's default). The CLI passes them as
`explain LESSON --set name=value`, the web explorer as a form. Every value is parsed and
range-checked here, so a bad value is one clear error naming the input, the value and the limits,
never a stack trace from deep inside the lesson (a huge sequence length would take minutes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from llm_internals.errors import LLMInternalsError

INPUT_KINDS = ("int", "float", "str")


@dataclass(frozen=True)
class LessonInput:
    """One editable input: `kind` int, float or str; numbers within [minimum, maximum]; a str
    at most `max_length` characters, or one of `choices` when given."""

    name: str
    label: str
    default: Any
    kind: str = "int"
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[Any, ...] | None = None
    max_length: int = 64
    help: str = ""

    def __post_init__(self) -> None:
        if self.kind not in INPUT_KINDS:
            raise ValueError(f"input {self.name}: kind {self.kind!r} not in {INPUT_KINDS}")
        self.parse(self.default)  # a default outside its own limits is a bug in the lesson

    def parse(self, raw: Any) -> Any:
        """The value `raw` (a string from the CLI or a form, or already typed) as this input's
        kind, checked against its limits; LLMInternalsError names the input otherwise."""
        value = self._convert(raw)
        if self.choices is not None and value not in self.choices:
            allowed = ", ".join(str(c) for c in self.choices)
            raise LLMInternalsError(
                f"lesson input {self.name} = {raw!r} is not one of: {allowed}",
                hint=f"--set {self.name}=<one of {allowed}>",
            )
        if self.kind == "str":
            if not value or len(value) > self.max_length:
                raise LLMInternalsError(
                    f"lesson input {self.name} must be 1 to {self.max_length} characters, "
                    f"got {len(value)}"
                )
            return value
        low, high = self.minimum, self.maximum
        if (low is not None and value < low) or (high is not None and value > high):
            raise LLMInternalsError(
                f"lesson input {self.name} = {value} is outside [{_limit(low)}, {_limit(high)}]",
                hint=f"{self.label}: {self.help}" if self.help else None,
            )
        return value

    def _convert(self, raw: Any) -> Any:
        if self.kind == "str":
            return str(raw)
        text = str(raw).strip()
        try:
            if self.kind == "int":
                if isinstance(raw, float) and not raw.is_integer():
                    raise ValueError
                return int(raw) if isinstance(raw, (int, float)) else int(text, 10)
            value = float(raw) if isinstance(raw, (int, float)) else float(text)
        except (TypeError, ValueError):
            wanted = "an integer" if self.kind == "int" else "a number"
            raise LLMInternalsError(
                f"lesson input {self.name} must be {wanted}, got {raw!r}"
            ) from None
        if isinstance(raw, bool) or not math.isfinite(value):
            raise LLMInternalsError(
                f"lesson input {self.name} must be a finite number, got {raw!r}"
            )
        return value

    def to_dict(self, value: Any = None) -> dict[str, Any]:
        """JSON form for the web explorer: the declaration and the value used."""
        return {
            "name": self.name,
            "label": self.label,
            "kind": self.kind,
            "default": self.default,
            "value": self.default if value is None else value,
            "minimum": self.minimum,
            "maximum": self.maximum,
            "choices": list(self.choices) if self.choices is not None else None,
            "help": self.help,
        }


def _limit(x: float | None) -> str:
    return "-inf" if x is None else f"{x:g}"


def parse_inputs(
    declared: tuple[LessonInput, ...], given: dict[str, Any], lesson: str
) -> dict[str, Any]:
    """All declared inputs with `given` values parsed over the defaults; an unknown name is an
    error listing the lesson's inputs."""
    by_name = {i.name: i for i in declared}
    unknown = sorted(set(given) - set(by_name))
    if unknown:
        known = ", ".join(by_name) if by_name else "none"
        raise LLMInternalsError(
            f"lesson {lesson!r} has no input {unknown[0]!r}", hint=f"its inputs: {known}"
        )
    return {
        name: i.parse(given[name]) if name in given else i.default for name, i in by_name.items()
    }


def parse_assignments(pairs: list[str]) -> dict[str, str]:
    """CLI `--set name=value` strings as a dict (the value is parsed later, per input)."""
    out: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise LLMInternalsError(
                f"--set expects name=value, got {pair!r}", hint="e.g. --set d_k=128"
            )
        out[name.strip()] = value
    return out
