"""files.py: whole-or-nothing writes with ordinary permissions, and JSON reads whose errors name
the file and the problem."""

from __future__ import annotations

import os
import stat

import pytest

from llm_internals.errors import LLMInternalsError
from llm_internals.files import atomic_write, atomic_write_text, read_json, write_json


def test_written_files_get_the_mode_open_would_give(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "hello")
        plain = tmp_path / "plain.txt"
        plain.write_text("hello")
    finally:
        os.umask(old)
    mode = stat.S_IMODE((tmp_path / "a.txt").stat().st_mode)
    assert mode == stat.S_IMODE(plain.stat().st_mode) == 0o644


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "state.json"
    write_json(target, {"step": 1})

    def crash(tmp):
        tmp.write_text('{"step": 2, "half')
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, crash)
    assert read_json(target) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"a": 1,', "malformed JSON at line 1 column 9"),
        (b"[1, 2]", "expected a JSON object, found list"),
        (b'{"a": "\xff"}', "not UTF-8 text (byte 0xff at offset 7)"),
    ],
)
def test_read_json_errors_name_the_file_and_the_problem(tmp_path, content, message):
    path = tmp_path / "config.json"
    path.write_bytes(content)
    with pytest.raises(LLMInternalsError) as info:
        read_json(path)
    assert str(path) in info.value.message and message in info.value.message


def test_read_json_refuses_oversized_files_and_folders(tmp_path):
    path = tmp_path / "big.json"
    path.write_text('{"pad": "' + "x" * 2000 + '"}')
    with pytest.raises(LLMInternalsError, match="more than a config may hold"):
        read_json(path, "config", max_bytes=1000)
    with pytest.raises(LLMInternalsError, match="is a folder"):
        read_json(tmp_path)
    with pytest.raises(LLMInternalsError, match="does not exist"):
        read_json(tmp_path / "missing.json")
