"""Reading tokenizer files: detect the format, and report problems naming the file and field.

Three formats: our own versioned JSON (own_json.py), HF `tokenizer.json` (hf_json.py) and
tiktoken rank files (tiktoken_file.py). Reads and atomic writes use
llm_internals.files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llm_internals.errors import LLMInternalsError
from llm_internals.files import parse_json, read_text


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
    text = read_text(path, "tokenizer file")
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
