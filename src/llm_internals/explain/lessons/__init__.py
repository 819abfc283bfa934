"""Lessons, one module each, listed here in curriculum order (see explain/registry.py)."""

LESSON_MODULES: tuple[str, ...] = ("softmax",)
