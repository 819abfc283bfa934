"""Renderers: golden Markdown and JSON for the softmax lesson, plus layout rules.

The golden files pin the renderers' output format (a change in layout must be deliberate):
regenerate with `UPDATE_GOLDEN=1 pytest tests/explain/test_render.py` and review the diff.
The numbers inside them are checked independently in test_softmax_lesson.py.
"""

import io
import json
import os
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from llm_internals.explain.lesson import Lesson, Section, Step, Table
from llm_internals.explain.lessons import softmax as softmax_lesson
from llm_internals.explain.render import JSON_SCHEMA, render_json, render_markdown, render_terminal

GOLDEN = Path(__file__).parent / "golden"


def _check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text(), f"{name} changed; see the module docstring to update"


def test_softmax_markdown_matches_golden():
    _check_golden("softmax.md", render_markdown(softmax_lesson.build()))


def test_softmax_json_matches_golden_and_schema():
    text = render_json(softmax_lesson.build())
    _check_golden("softmax.json", text)
    data = json.loads(text)
    assert data["schema"] == JSON_SCHEMA and data["name"] == "softmax"
    kinds = {v["kind"] for s in data["sections"] for st in s["steps"] for v in st["values"]}
    assert kinds == {"tensor", "table"}
    nan_values = data["sections"][1]["steps"][1]["values"][0]["data"]
    assert nan_values == ["nan", "nan", "nan"]


def _lesson(values, decimals=3):
    return Lesson("t", "T", "s", [Section("sec", [Step("text", "f(x)", values, decimals)])])


def test_large_tensor_shows_shape_and_corner_small_one_in_full():
    big = torch.arange(100.0).reshape(10, 10)
    small = torch.arange(64.0).reshape(8, 8)
    md = render_markdown(_lesson({"big": big, "small": small}, decimals=1))
    assert "shape (10x10), top-left 6x6 corner" in md
    assert "| 0 | 0.0 | 1.0 | 2.0 | 3.0 | 4.0 | 5.0 | … |" in md
    assert "99.0" not in md.split("**small**")[0]
    assert "63.0" in md  # the 8x8 tensor is shown whole
    buf = io.StringIO()
    render_terminal(_lesson({"big": big}), Console(file=buf, width=120))
    out = buf.getvalue()
    assert "top-left 6x6 corner" in out and "…" in out


def test_scalars_tables_text_and_higher_rank_in_all_formats():
    values = {
        "scalar": 1.23456,
        "int": 7,
        "word": "hello",
        "one element": torch.tensor([2.5]),
        "cube": np.arange(27.0).reshape(3, 3, 3),
        "table": Table(["a", "b"], [["x", 0.5]]),
    }
    md = render_markdown(_lesson(values))
    assert "- **scalar** = `1.235`" in md and "- **int** = `7`" in md
    assert "- **one element** = `2.500`" in md
    assert "showing [0, :, :]" in md and "| x | 0.500 |" in md
    data = json.loads(render_json(_lesson(values)))
    by_name = {v["name"]: v for v in data["sections"][0]["steps"][0]["values"]}
    assert by_name["cube"]["shape"] == [3, 3, 3] and by_name["cube"]["data"][2][2][2] == 26.0
    assert by_name["word"] == {"name": "word", "kind": "text", "value": "hello"}
    assert by_name["table"]["rows"] == [["x", 0.5]]


def test_json_truncates_huge_tensors_and_says_so():
    data = json.loads(render_json(_lesson({"huge": torch.zeros(100, 100)})))
    value = data["sections"][0]["steps"][0]["values"][0]
    assert value["shape"] == [100, 100] and value["truncated"] is True
    assert value["data_shape"] == [8, 8] and len(value["data"]) == 8
