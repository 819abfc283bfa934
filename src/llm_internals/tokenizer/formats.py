"""Reading tokenizer files: detect the format, and report problems naming the file and field.

Three formats: our own versioned JSON (own_json.py), HF `tokenizer.json` (hf_json.py) and
tiktoken rank files (tiktoken_file.py). Writes go through `atomic_write_text`: a temp file in the
same folder, then os.replace, so a crash never leaves half a file behind.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from llm_internals.data.corpus import atomic_write_bytes
from llm_internals.errors import LLMInternalsError


def atomic_write_text(path: Path, text: str) -> None:
    """Write UTF-8 text via a temp file in the same directory and a rename."""
    atomic_write_bytes(path, text.encode("utf-8"))


def read_text(path: Path) -> str:
    """A tokenizer file's text, with clear errors for missing or non-UTF-8 files."""
    if not path.exists():
        raise LLMInternalsError(f"{path}: no such tokenizer file")
    if path.is_dir():
        raise LLMInternalsError(f"{path} is a folder, not a tokenizer file")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise LLMInternalsError(f"{path}: not UTF-8 text (byte offset {e.start})") from None


def parse_json(path: Path, text: str) -> Any:
    """Parse JSON; a malformed or truncated file names the line and column."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise LLMInternalsError(
            f"{path}: malformed JSON at line {e.lineno} column {e.colno}: {e.msg}",
            hint="the file may be truncated; re-create it",
        ) from None


def field(obj: Any, name: str, kind: type | tuple[type, ...], path: Path, where: str = "") -> Any:
    """obj[name], checked to exist and to have the expected type."""
    label = f"{where}.{name}" if where else name
    if not isinstance(obj, dict) or name not in obj:
        raise LLMInternalsError(f"{path}: missing field {label!r}")
    value = obj[name]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        expected = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise LLMInternalsError(
            f"{path}: field {label!r} should be {expected}, not {type(value).__name__}"
        )
    return value


def load_any(path: Path, pattern: str | None = None):
    """Load a tokenizer from our JSON, an HF tokenizer.json (or its folder), or a rank file."""
    from llm_internals.tokenizer.hf_json import tokenizer_from_hf_dict
    from llm_internals.tokenizer.own_json import FORMAT_NAME, tokenizer_from_own_dict
    from llm_internals.tokenizer.tiktoken_file import parse_rank_file, tokenizer_from_ranks

    if path.is_dir() and (path / "tokenizer.json").exists():
        path = path / "tokenizer.json"
    text = read_text(path)
    if text.lstrip().startswith("{"):
        obj = parse_json(path, text)
        if obj.get("format") == FORMAT_NAME:
            return tokenizer_from_own_dict(obj, path)
        if "model" in obj:
            return tokenizer_from_hf_dict(obj, path)
        raise LLMInternalsError(
            f"{path}: JSON that is neither an llm-internals tokenizer (field 'format') nor an "
            "HF tokenizer.json (field 'model')"
        )
    ranks = parse_rank_file(path, text)
    return tokenizer_from_ranks(ranks, pattern or "gpt4", None)
