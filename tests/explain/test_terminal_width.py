"""The terminal renderer at 80 columns: no line wider than the console, no cell cut off (every
character a 1000-column render shows is still there, and no ellipsis is added), wide tables
transposed when that fits; whole numbers with separators and units. The fixtures are in
conftest.py (test_explain_command.py runs the same check on every lesson)."""

from __future__ import annotations

from llm_internals.explain.lesson import Lesson, Section, Step, Table
from llm_internals.explain.values import format_bytes, format_count, format_number


def _lesson(values: dict) -> Lesson:
    return Lesson("t", "T", "s", [Section("S", [Step("text", values=values)])])


def test_wide_table_of_few_rows_is_transposed_and_fits(assert_fits_without_cuts, terminal_text):
    columns = ["model", *(f"component number {i}" for i in range(9))]
    rows = [[f"model-{r}", *(123456789 * (i + 1) + r for i in range(9))] for r in range(3)]
    lesson = _lesson({"parameters": Table(columns, rows)})
    assert_fits_without_cuts(lesson)
    lines = terminal_text(lesson, 80).splitlines()
    header = next(line for line in lines if "model-0" in line)
    assert "model-1" in header and "model-2" in header  # the models became the columns


def test_table_too_wide_either_way_wraps_rather_than_cuts(assert_fits_without_cuts):
    columns = [f"a rather long column name {i}" for i in range(12)]
    rows = [[f"cell-{r}-{i}-with-a-long-unbreakable-text" for i in range(12)] for r in range(12)]
    assert_fits_without_cuts(_lesson({"wide": Table(columns, rows)}))


def test_markup_like_cells_are_shown_literally(terminal_text):
    lesson = _lesson({"t": Table(["[bold]x[/bold]"], [["[red]y[/red]"]])})
    out = terminal_text(lesson, 80)
    assert "[bold]x[/bold]" in out and "[red]y[/red]" in out


def test_units_and_separators(terminal_text):
    assert format_bytes(512 * 1024) == "512 KiB"
    assert format_bytes(2**30) == "1 GiB"
    assert format_bytes(int(7.5 * 2**30)) == "7.5 GiB"
    assert format_bytes(1000) == "1,000 B"
    assert format_count(8_030_261_248) == "8.03 B"
    assert format_count(124_439_808) == "124.44 M"
    assert format_count(38_400) == "38,400"
    assert format_number(1234567, 2) == "1,234,567"
    assert format_number(True, 2) == "True"
    assert format_number(0.5, 3) == "0.500"
    out = terminal_text(
        _lesson({"KV cache bytes": 4 * 2**30, "t": Table(["ffn params", "layers"], [[10**9, 32]])}),
        80,
    )
    assert "KV cache bytes = 4 GiB" in out and "1 B" in out and " 32 " in out
