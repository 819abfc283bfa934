"""Size figures of a text, as the `corpus` command and the tour print them."""

from __future__ import annotations


def describe_text(text: str) -> dict[str, int]:
    """UTF-8 bytes, characters, lines and distinct characters of `text`."""
    return {
        "bytes (UTF-8)": len(text.encode("utf-8")),
        "characters": len(text),
        "lines": text.count("\n") + (0 if text.endswith("\n") or not text else 1),
        "unique characters": len(set(text)),
    }
