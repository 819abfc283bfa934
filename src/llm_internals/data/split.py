"""A deterministic train/validation split at a line boundary."""

from __future__ import annotations

from llm_internals.errors import LLMInternalsError


def train_val_split(text: str, val_fraction: float = 0.1) -> tuple[str, str]:
    """Split `text` into (train, validation): the last `val_fraction` of it, cut at a line start.

    The cut is the first line start at or after character len(text) * (1 - val_fraction), so no
    line is split between the two parts and the same text always splits the same way.
    train + validation == text.
    """
    if not 0.0 < val_fraction < 1.0:
        raise LLMInternalsError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    target = int(len(text) * (1.0 - val_fraction))
    if target > 0 and text[target - 1] == "\n":
        cut = target
    else:
        next_newline = text.find("\n", target)
        cut = next_newline + 1 if next_newline != -1 else len(text)
        if cut >= len(text):  # no line starts after the target: use the one before it
            cut = text.rfind("\n", 0, target) + 1
    if cut == 0 or cut >= len(text):
        raise LLMInternalsError(
            f"cannot split {len(text)} characters at a line boundary with val_fraction "
            f"{val_fraction}: one side would be empty",
            hint="use a longer text with several lines",
        )
    return text[:cut], text[cut:]
