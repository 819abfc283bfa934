"""Turning a step's values (tensors, arrays, scalars, tables) into text cells, for every renderer.

Tensors with at most MAX_FULL rows and columns are shown whole; larger ones as their shape and
the top-left CORNER x CORNER block. Tensors of rank 3 or more show their first matrix.

Whole numbers are shown with thousands separators; where a value's name (or its table column's)
says it is a byte size or a parameter count, in binary units (512 KiB) or short scale (8.03 B).
The JSON renderer keeps the exact numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from llm_internals.explain.lesson import Table

MAX_FULL = 8
CORNER = 6
ELLIPSIS = "…"


@dataclass
class Grid:
    """A value laid out as text: a caption, column headers and rows of cells."""

    caption: str
    header: list[str]
    rows: list[list[str]]


def as_array(value: Any) -> np.ndarray | None:
    """A numpy view of tensors and arrays; None for anything else."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        if value.dtype == torch.bfloat16 or value.dtype == torch.float16:
            value = value.float()
        return value.numpy()
    if isinstance(value, np.ndarray):
        return value
    return None


BYTE_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")
COUNT_UNITS = ((10**12, "T"), (10**9, "B"), (10**6, "M"))


def unit_of(name: str) -> str | None:
    """ "bytes" or "count" when a value's name says what its whole numbers measure, else None."""
    lowered = name.lower()
    if "bytes" in lowered:
        return "bytes"
    if "param" in lowered:
        return "count"
    return None


def _trimmed(x: float) -> str:
    """Two decimals without trailing zeros: 512.0 -> "512", 7.5 -> "7.5", 8.031 -> "8.03"."""
    return f"{x:.2f}".rstrip("0").rstrip(".")


def format_bytes(n: int) -> str:
    """A byte count in binary units: 524288 -> "512 KiB", 1000 -> "1,000 B"."""
    power = 0
    while power + 1 < len(BYTE_UNITS) and abs(n) >= 1024 ** (power + 1):
        power += 1
    if power == 0:
        return f"{n:,} B"
    return f"{_trimmed(n / 1024**power)} {BYTE_UNITS[power]}"


def format_count(n: int) -> str:
    """A count in short scale past a million: 8030261248 -> "8.03 B"; smaller ones with commas."""
    for size, suffix in COUNT_UNITS:
        if abs(n) >= size:
            return f"{_trimmed(n / size)} {suffix}"
    return f"{n:,}"


def format_number(x: Any, decimals: int, unit: str | None = None) -> str:
    """Floats with a fixed number of decimals (nan/inf spelled out), bools as they are, whole
    numbers with thousands separators or in `unit` ("bytes", "count")."""
    if isinstance(x, (bool, np.bool_)):
        return str(bool(x))
    if isinstance(x, (int, np.integer)):
        if unit == "bytes":
            return format_bytes(int(x))
        if unit == "count":
            return format_count(int(x))
        return f"{int(x):,}"
    if isinstance(x, (float, np.floating)):
        x = float(x)
        if math.isnan(x):
            return "nan"
        if math.isinf(x):
            return "inf" if x > 0 else "-inf"
        return f"{x:.{decimals}f}"
    return str(x)


def _matrix_view(array: np.ndarray) -> tuple[np.ndarray, str]:
    """The 2-D slice to show and a caption saying which part of the tensor it is."""
    shape = "x".join(str(s) for s in array.shape)
    if array.ndim == 1:
        return array[None, :], f"shape ({shape})"
    if array.ndim == 2:
        return array, f"shape ({shape})"
    lead = ", ".join("0" for _ in array.shape[:-2])
    return array[(0,) * (array.ndim - 2)], f"shape ({shape}), showing [{lead}, :, :]"


def tensor_grid(array: np.ndarray, decimals: int) -> Grid:
    """Lay out a tensor of rank >= 1 as a grid of text cells (corner only when large)."""
    matrix, caption = _matrix_view(array)
    n_rows, n_cols = matrix.shape
    rows_shown = n_rows if n_rows <= MAX_FULL else CORNER
    cols_shown = n_cols if n_cols <= MAX_FULL else CORNER
    if rows_shown < n_rows or cols_shown < n_cols:
        caption += f", top-left {rows_shown}x{cols_shown} corner"
    labels = [] if array.ndim == 1 else [""]
    header = labels + [str(j) for j in range(cols_shown)]
    if cols_shown < n_cols:
        header.append(ELLIPSIS)
    rows = []
    for i in range(rows_shown):
        label = [] if array.ndim == 1 else [str(i)]
        cells = [format_number(v, decimals) for v in matrix[i, :cols_shown]]
        rows.append(label + cells + ([ELLIPSIS] if cols_shown < n_cols else []))
    if rows_shown < n_rows:
        rows.append([ELLIPSIS] * len(header))
    return Grid(caption, header, rows)


def table_grid(table: Table, decimals: int, name: str = "") -> Grid:
    """Lay out a Table: numbers get the step's decimals and the unit their column's name (or else
    the table's `name`) implies, everything else its str()."""
    units = [unit_of(column) or unit_of(name) for column in table.columns]
    rows = [
        [format_number(cell, decimals, unit) for cell, unit in zip(row, units, strict=True)]
        for row in table.rows
    ]
    return Grid("", list(table.columns), rows)


def describe(value: Any, decimals: int, name: str = "") -> str | Grid:
    """A one-line string for scalars and text, a Grid for tensors and tables; `name` (the value's
    display name) chooses units for whole numbers."""
    if isinstance(value, Table):
        return table_grid(value, decimals, name)
    array = as_array(value)
    if array is not None:
        if array.size == 1:
            return format_number(array.reshape(-1)[0], decimals)
        return tensor_grid(array, decimals)
    return format_number(value, decimals, unit_of(name))
