"""Files written whole or not at all, and JSON read with errors that name the file.

Every write goes to a temporary file in the target's folder and is renamed over the target
(`os.replace` is atomic on one file system), so a crash or a full disk never leaves half a file
behind and a reader sees either the old content or the new. The temporary file gets the mode a
plain `open()` would give (0666 less the umask, usually 0644), not mkstemp's private 0600.

Reads are bounded (`max_bytes`) so a config file that is really a 4 GB blob fails at once, and
every problem (missing, a folder, not UTF-8, malformed JSON, not an object) is one
LLMInternalsError naming the file, line and column.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llm_internals.errors import LLMInternalsError

DEFAULT_MAX_JSON_BYTES = 64 * 1024 * 1024  # config and metadata files; tokenizers may be larger


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: Path | str, write: Callable[[Path], None]) -> None:
    """Call `write(tmp)` to fill a temporary file beside `path`, then rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path | str, data: bytes) -> None:
    """Write `data` to `path` atomically."""
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: Path | str, text: str) -> None:
    """Write UTF-8 `text` to `path` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: Path | str, data: Any) -> None:
    """Write `data` as indented, key-sorted JSON, atomically."""
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def read_text(path: Path | str, what: str = "file", max_bytes: int | None = None) -> str:
    """A UTF-8 file's text; clear errors for a missing file, a folder, too many bytes or bad
    UTF-8. `what` names the kind of file in messages ("tokenizer file", "config")."""
    path = Path(path)
    if not path.exists():
        raise LLMInternalsError(f"{path} does not exist (expected a {what})")
    if path.is_dir():
        raise LLMInternalsError(f"{path} is a folder, not a {what}")
    if max_bytes is not None and path.stat().st_size > max_bytes:
        raise LLMInternalsError(
            f"{path}: {path.stat().st_size:,} bytes is more than a {what} may hold "
            f"({max_bytes:,} bytes)"
        )
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise LLMInternalsError(
            f"{path}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start})"
        ) from None


def parse_json(path: Path | str, text: str) -> Any:
    """Parse JSON text read from `path`; a malformed or truncated file names line and column."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise LLMInternalsError(
            f"{path}: malformed JSON at line {e.lineno} column {e.colno}: {e.msg}",
            hint="the file may be truncated or hand-edited; re-create it",
        ) from None


def read_json(
    path: Path | str, what: str = "JSON file", max_bytes: int = DEFAULT_MAX_JSON_BYTES
) -> dict[str, Any]:
    """A JSON object from `path` (bounded size; errors name the file and the problem)."""
    data = parse_json(path, read_text(path, what, max_bytes))
    if not isinstance(data, dict):
        raise LLMInternalsError(f"{path}: expected a JSON object, found {type(data).__name__}")
    return data
