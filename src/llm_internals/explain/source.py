"""The source lines of library functions, for lessons that show the code they run.

Lessons call `code_block(function)` instead of pasting code into their prose, so what the learner
reads is always the function's current source (tests compare it with `inspect.getsource`).
"""

from __future__ import annotations

import inspect
import textwrap
from typing import Any


def source_of(obj: Any) -> str:
    """The dedented source text of a function, method or class, without a trailing newline."""
    return textwrap.dedent(inspect.getsource(obj)).rstrip("\n")


def code_block(obj: Any) -> str:
    """The source of `obj` as a fenced Markdown code block, titled with where it lives."""
    where = f"{obj.__module__}.{obj.__qualname__}"
    return f"`{where}`:\n\n```python\n{source_of(obj)}\n```"
