"""The one exception type that the CLI turns into a clear, traceback-free message."""

from __future__ import annotations


class LLMInternalsError(ValueError):
    """A problem with the user's input or environment, stated so the user can fix it.

    `message` names the problem (file, field, value); `hint` says what to do about it.
    """

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
