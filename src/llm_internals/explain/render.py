"""Renderers for lessons: the terminal (rich), Markdown, and JSON (the web explorer's input).

The JSON schema is documented in docs/explain-json.md; its "schema" field changes whenever the
layout does.
"""

from __future__ import annotations

import json
import math
from typing import Any

from rich import box
from rich.console import Console
from rich.markdown import Markdown
from rich.markup import escape
from rich.measure import Measurement
from rich.panel import Panel
from rich.table import Table as RichTable

from llm_internals.explain.inputs import LessonInput
from llm_internals.explain.lesson import Lesson, Table
from llm_internals.explain.values import Grid, as_array, describe

JSON_SCHEMA = "llm-internals.lesson/2"
JSON_MAX_ELEMENTS = 4096


def transposed(grid: Grid) -> Grid:
    """Rows become columns: the first column's cells become the header, the header the first
    column. A wide table of few rows (nine parameter counts of four models) then fits."""
    header = [grid.header[0], *(row[0] for row in grid.rows)]
    rows = [[column, *(row[j] for row in grid.rows)] for j, column in enumerate(grid.header)][1:]
    return Grid(grid.caption, header, rows)


def _rich_table(title: str, grid: Grid, compact: bool = False) -> RichTable:
    """Cells wrap, and break inside a word only if a word alone is wider than its column
    ("fold"), so nothing is ever cut off with an ellipsis. Compact tables drop the outer edge
    and the vertical rules (a column then costs one space instead of three)."""
    style = {"box": box.SIMPLE_HEAD, "show_edge": False, "pad_edge": False} if compact else {}
    table = RichTable(title=title, title_justify="left", show_lines=False, **style)
    for column in grid.header:
        table.add_column(escape(column), justify="right", overflow="fold")
    for row in grid.rows:
        table.add_row(*(escape(cell) for cell in row))
    return table


def fitting_table(title: str, grid: Grid, console: Console) -> RichTable:
    """The grid as a rich table at most the console's width: as it is if it fits, else
    transposed, else compact, else compact and transposed; if none fits, the narrowest of them,
    with cells wrapped rather than cut."""

    def natural(t: RichTable) -> int:  # its width with no wrapping at all
        return Measurement.get(console, console.options.update_width(10**6), t).maximum

    layouts = [grid, transposed(grid)] if grid.rows else [grid]
    candidates = [_rich_table(title, g, compact) for compact in (False, True) for g in layouts]
    widths = [natural(t) for t in candidates]
    fitting = [t for t, w in zip(candidates, widths, strict=True) if w <= console.width]
    return fitting[0] if fitting else candidates[widths.index(min(widths))]


def render_terminal(lesson: Lesson, console: Console) -> None:
    """Print the lesson with rich: a header panel, then each section's steps and value tables
    (wide tables transposed or wrapped to the console's width)."""
    console.print(Panel(f"[bold]{lesson.title}[/bold]\n{lesson.summary}", expand=False))
    for number, section in enumerate(lesson.sections, start=1):
        console.rule(f"[bold]{number}. {section.title}")
        for step in section.steps:
            console.print(Markdown(step.text))
            if step.formula:
                console.print(f"  [bold cyan]{escape(step.formula)}[/bold cyan]")
            for name, value in step.values.items():
                shown = describe(value, step.decimals, name)
                if isinstance(shown, Grid):
                    title = f"{name}  [dim]{shown.caption}[/dim]" if shown.caption else name
                    console.print(fitting_table(title, shown, console))
                else:
                    console.print(f"  {name} = [bold]{shown}[/bold]")
            for figure in step.figures:
                console.print(f"  [bold]figure[/bold]: {escape(figure.caption)}")
                console.print(f"    {figure.path}", soft_wrap=True)
            console.print()


def _markdown_grid(grid: Grid) -> list[str]:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    return [line(grid.header), "|" + "---:|" * len(grid.header), *(line(r) for r in grid.rows)]


def render_markdown(lesson: Lesson) -> str:
    """The lesson as a Markdown document (headings, formulas in code blocks, pipe tables)."""
    out = [f"# {lesson.title}", "", lesson.summary, ""]
    for number, section in enumerate(lesson.sections, start=1):
        out += [f"## {number}. {section.title}", ""]
        for step in section.steps:
            out += [step.text, ""]
            if step.formula:
                out += ["```", step.formula, "```", ""]
            for name, value in step.values.items():
                shown = describe(value, step.decimals, name)
                if isinstance(shown, Grid):
                    caption = f" ({shown.caption})" if shown.caption else ""
                    out += [f"**{name}**{caption}", "", *_markdown_grid(shown), ""]
                else:
                    out += [f"- **{name}** = `{shown}`", ""]
            for figure in step.figures:
                out += [f"![{figure.caption}]({figure.path.as_posix()})", ""]
    return "\n".join(out).rstrip() + "\n"


def _json_number(x: Any) -> Any:
    """Floats rounded to 6 decimals; nan and infinities as strings (JSON has no such numbers)."""
    if isinstance(x, bool) or x is None or isinstance(x, str):
        return x
    if isinstance(x, int):
        return x
    x = float(x)
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return round(x, 6)


def _json_value(name: str, value: Any) -> dict[str, Any]:
    if isinstance(value, Table):
        rows = [[_json_number(c) if not isinstance(c, str) else c for c in r] for r in value.rows]
        return {"name": name, "kind": "table", "columns": list(value.columns), "rows": rows}
    array = as_array(value)
    if array is not None:
        entry: dict[str, Any] = {
            "name": name,
            "kind": "tensor",
            "shape": list(array.shape),
            "dtype": str(array.dtype),
        }
        truncated = array.size > JSON_MAX_ELEMENTS
        if truncated:
            array = array[tuple(slice(0, 8) for _ in array.shape)]
        entry["truncated"] = truncated
        if truncated:
            entry["data_shape"] = list(array.shape)
        flat = [_json_number(v) for v in array.reshape(-1).tolist()]
        entry["data"] = _nest(flat, list(array.shape))
        return entry
    if isinstance(value, str):
        return {"name": name, "kind": "text", "value": value}
    return {"name": name, "kind": "scalar", "value": _json_number(value)}


def _nest(flat: list[Any], shape: list[int]) -> Any:
    if not shape:
        return flat[0]
    if len(shape) == 1:
        return flat
    step = len(flat) // shape[0] if shape[0] else 0
    return [_nest(flat[i * step : (i + 1) * step], shape[1:]) for i in range(shape[0])]


def lesson_to_dict(lesson: Lesson, declared: tuple[LessonInput, ...] = ()) -> dict[str, Any]:
    """The lesson as plain JSON-ready data (see docs/explain-json.md); `declared` are the
    lesson's editable inputs, listed with the values it was built with."""
    return {
        "schema": JSON_SCHEMA,
        "name": lesson.name,
        "title": lesson.title,
        "summary": lesson.summary,
        "inputs": [i.to_dict(lesson.inputs.get(i.name)) for i in declared],
        "sections": [
            {
                "title": section.title,
                "steps": [
                    {
                        "text": step.text,
                        "formula": step.formula,
                        "decimals": step.decimals,
                        "values": [_json_value(n, v) for n, v in step.values.items()],
                        "figures": [
                            {"path": str(f.path), "file": f.path.name, "caption": f.caption}
                            for f in step.figures
                        ],
                    }
                    for step in section.steps
                ],
            }
            for section in lesson.sections
        ],
    }


def render_json(lesson: Lesson, declared: tuple[LessonInput, ...] = ()) -> str:
    """The lesson as indented, key-stable JSON text."""
    return json.dumps(lesson_to_dict(lesson, declared), indent=2, ensure_ascii=False) + "\n"
