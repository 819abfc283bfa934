"""Figures for lessons: matplotlib drawings of the numbers a lesson already computed, as PNGs.

A lesson hands a drawing function the arrays it shows (the library's own numbers) and gets
back a `Figure` (path + caption) to put on a step. Files go to a cache folder,

    $LLM_INTERNALS_FIGURES, else $LLM_INTERNALS_HOME/figures, else ~/.cache/llm-internals/figures

named `<lesson>-<figure>-<hash>.png`, the hash taken over everything drawn (arrays, labels,
titles, FIGURE_STYLE): the same data gives the same file (drawn once, reused afterwards), a
lesson rebuilt with other inputs gets its own file. Writes are atomic, and PNGs carry no
timestamp or version, so the bytes depend on the data alone.

matplotlib (Agg, no display) is imported on the first drawing only, so `llm-internals lessons`
stays fast. `plotted(path)` returns the arrays read back from the matplotlib artists of a figure
drawn in this process (what is on the picture, not what was passed): the tests compare them
with an independent computation.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from llm_internals.explain.lesson import Figure
from llm_internals.files import atomic_write

FIGURES_ENV = "LLM_INTERNALS_FIGURES"
FIGURE_STYLE = "2"  # bump when the drawing code changes what a figure looks like
DPI = 100
_PLOTTED: dict[Path, dict[str, np.ndarray]] = {}


def figures_dir() -> Path:
    """Where figures are written (see the module docstring)."""
    if os.environ.get(FIGURES_ENV):
        return Path(os.environ[FIGURES_ENV])
    from llm_internals.data.corpus import corpus_home

    return corpus_home() / "figures"


def plotted(path: Path) -> dict[str, np.ndarray]:
    """{label: array} read back from the artists of the figure drawn at `path` in this process
    (a figure found in the cache was not drawn again: point $LLM_INTERNALS_FIGURES at an empty
    folder to draw afresh)."""
    if Path(path) not in _PLOTTED:
        raise KeyError(f"{path} was not drawn in this process")
    return _PLOTTED[Path(path)]


def _digest(lesson: str, name: str, spec: Mapping[str, Any]) -> str:
    hasher = hashlib.sha256(f"{FIGURE_STYLE}\0{lesson}\0{name}\0".encode())

    def feed(value: Any) -> None:
        if isinstance(value, Mapping):
            for key in value:
                hasher.update(f"{key}:".encode())
                feed(value[key])
        elif isinstance(value, np.ndarray):
            hasher.update(f"{value.shape}".encode() + np.ascontiguousarray(value).tobytes())
        elif isinstance(value, (list, tuple)):
            for item in value:
                feed(item)
            hasher.update(b";")
        else:
            hasher.update(json.dumps(value).encode())

    feed(spec)
    return hasher.hexdigest()[:12]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path, data: dict[str, np.ndarray]) -> None:
    atomic_write(
        path,
        lambda tmp: fig.savefig(
            tmp,
            format="png",
            dpi=DPI,
            metadata={"Software": None},
            bbox_inches="tight",
            pad_inches=0.1,
        ),
    )
    _PLOTTED[path] = data
    _pyplot().close(fig)


def _target(lesson: str, name: str, spec: dict[str, Any]) -> Path:
    return figures_dir() / f"{lesson}-{name}-{_digest(lesson, name, spec)}.png"


def _array(values: Any) -> np.ndarray:
    if hasattr(values, "detach"):
        values = values.detach().cpu().double().numpy()
    return np.asarray(values, dtype=np.float64)


def line_figure(
    lesson: str,
    name: str,
    caption: str,
    x: Any,
    series: Mapping[str, Any],
    xlabel: str,
    ylabel: str,
    title: str = "",
    logx: bool = False,
    logy: bool = False,
    xs: Mapping[str, Any] | None = None,
) -> Figure:
    """One curve per entry of `series` (label -> y values over `x`, or over xs[label])."""
    xs_arrays = {label: _array((xs or {}).get(label, x)) for label in series}
    spec = {"x": xs_arrays, "series": {k: _array(v) for k, v in series.items()},
            "labels": [xlabel, ylabel, title, logx, logy]}  # fmt: skip
    path = _target(lesson, name, spec)
    if path.exists():  # drawn before from the same data
        return Figure(path, caption)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for label, y in spec["series"].items():
        ax.plot(xs_arrays[label], y, marker="o" if len(y) <= 12 else None, label=label)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    if logx:
        ax.set_xscale("log", base=2)
    if logy:
        ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    data = {line.get_label(): np.asarray(line.get_ydata(), dtype=np.float64) for line in ax.lines}
    data.update({f"x:{line.get_label()}": np.asarray(line.get_xdata(), dtype=np.float64)
                 for line in ax.lines})  # fmt: skip
    _save(fig, path, data)
    return Figure(path, caption)


def heatmap_figure(
    lesson: str,
    name: str,
    caption: str,
    panels: Mapping[str, Any],
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    title: str = "",
    vmin: float | None = None,
    vmax: float | None = None,
    annotate: bool = False,
) -> Figure:
    """One heatmap per entry of `panels` (panel title -> 2-D array), side by side, one colour
    scale; `annotate` writes each cell's value (for small matrices)."""
    arrays = {k: _array(v) for k, v in panels.items()}
    spec = {"panels": arrays, "rows": list(row_labels or []), "cols": list(col_labels or []),
            "labels": [title, vmin, vmax, annotate]}  # fmt: skip
    path = _target(lesson, name, spec)
    if path.exists():  # drawn before from the same data
        return Figure(path, caption)
    plt = _pyplot()
    n = len(arrays)
    size = max(a.shape[0] for a in arrays.values())
    side = min(max(2.6, 0.32 * size), 5.0)
    fig, axes = plt.subplots(1, n, figsize=(side * n + 1.2, side + 0.8), squeeze=False)
    low = min(float(a.min()) for a in arrays.values()) if vmin is None else vmin
    high = max(float(a.max()) for a in arrays.values()) if vmax is None else vmax
    image = None
    for ax, (label, array) in zip(axes[0], arrays.items(), strict=True):
        image = ax.imshow(array, cmap="viridis", vmin=low, vmax=high, interpolation="nearest")
        ax.set_title(label, fontsize=9)
        for labels, setter, ticks in ((row_labels, ax.set_yticks, array.shape[0]),
                                      (col_labels, ax.set_xticks, array.shape[1])):  # fmt: skip
            if labels is not None:
                setter(range(ticks), list(labels), fontsize=7)
        ax.tick_params(axis="x", labelrotation=90)
        if annotate:
            for (i, j), value in np.ndenumerate(array):
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=6,
                        color="white" if value < (low + high) / 2 else "black")  # fmt: skip
    if title:
        fig.suptitle(title)
    fig.colorbar(image, ax=list(axes[0]), shrink=0.8)
    data = {
        ax.get_title(): np.asarray(ax.images[0].get_array(), dtype=np.float64) for ax in axes[0]
    }
    _save(fig, path, data)
    return Figure(path, caption)


def path_figure(
    lesson: str,
    name: str,
    caption: str,
    paths: Mapping[str, Any],
    xlabel: str,
    ylabel: str,
    title: str = "",
) -> Figure:
    """Points in a plane joined in order (label -> (N, 2) array), each labelled with its index,
    equal axes: e.g. a feature pair rotated by RoPE over positions."""
    arrays = {k: _array(v) for k, v in paths.items()}
    spec = {"paths": arrays, "labels": [xlabel, ylabel, title]}
    path = _target(lesson, name, spec)
    if path.exists():  # drawn before from the same data
        return Figure(path, caption)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.2, 5.2))
    for label, points in arrays.items():
        (line,) = ax.plot(points[:, 0], points[:, 1], marker="o", lw=0.6, label=label)
        for index, (px, py) in enumerate(points):  # each point labelled with its index
            ax.annotate(str(index), (px, py), xytext=(4, 4), textcoords="offset points",
                        fontsize=7, color=line.get_color())  # fmt: skip
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.set_aspect("equal")
    ax.axhline(0, color="grey", lw=0.5)
    ax.axvline(0, color="grey", lw=0.5)
    ax.legend(fontsize=8)
    fig.tight_layout()
    data = {
        line.get_label(): np.stack([line.get_xdata(), line.get_ydata()], axis=1).astype(np.float64)
        for line in ax.lines
        if not line.get_label().startswith("_")
    }
    _save(fig, path, data)
    return Figure(path, caption)


def bar_figure(
    lesson: str,
    name: str,
    caption: str,
    categories: Sequence[str],
    series: Mapping[str, Any],
    ylabel: str,
    title: str = "",
) -> Figure:
    """Grouped bars: one group per category, one bar per entry of `series` in each group."""
    arrays = {k: _array(v) for k, v in series.items()}
    spec = {"categories": list(categories), "series": arrays, "labels": [ylabel, title]}
    path = _target(lesson, name, spec)
    if path.exists():  # drawn before from the same data
        return Figure(path, caption)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    width = 0.8 / len(arrays)
    positions = np.arange(len(categories), dtype=np.float64)
    data = {}
    for i, (label, heights) in enumerate(arrays.items()):
        bars = ax.bar(positions + i * width, heights, width, label=label)
        data[label] = np.array([bar.get_height() for bar in bars], dtype=np.float64)
    ax.set_xticks(positions + width * (len(arrays) - 1) / 2, list(categories), fontsize=8)
    ax.set(ylabel=ylabel, title=title)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    _save(fig, path, data)
    return Figure(path, caption)
