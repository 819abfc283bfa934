"""The tour: every stage of the stack run in order on one corpus, each printing what it measured.

A stage is a module in this package with `run(ctx: TourContext) -> None`; STAGES lists them in
order, and a stage whose module is None is shown as not yet built. Models live on `ctx.device`;
training keeps float32 weights (bf16 autocast) and the generation and serving stages run in
`ctx.dtype`.
"""

from __future__ import annotations

import importlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from llm_internals.console import console as default_console
from llm_internals.devices import describe_device, resolve_device, resolve_dtype

STAGES: list[tuple[str, str | None]] = [
    ("corpus", "corpus"),
    ("tokenizer", "tokenizer"),
    ("model", "model"),
    ("training", "training"),
    ("generation", "generation"),
    ("serving", "serving"),
]


@dataclass
class TourContext:
    """What stages share: the console, a folder for artifacts, the corpus and earlier results."""

    console: Console
    workdir: Path
    corpus_source: str
    text: str = ""
    train_text: str = ""
    val_text: str = ""
    artifacts: dict[str, Any] = field(default_factory=dict)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    dtype: torch.dtype = torch.float32

    def place(self, model: torch.nn.Module) -> torch.nn.Module:
        """The model on the tour's device, in its dtype (in place, as Module.to is)."""
        return model.to(device=self.device, dtype=self.dtype)

    def verdict(self, same: bool) -> str:
        """'yes', or 'NO' with the likely reason when the tour runs in reduced precision (two
        paths that add in different orders round differently in bfloat16 and float16)."""
        if same:
            return "yes"
        if self.dtype in (torch.float32, torch.float64):
            return "NO"
        return f"NO (expected now and then in {str(self.dtype).removeprefix('torch.')})"

    def where(self) -> str:
        """'cpu, float32' or 'cuda:0 (NVIDIA H200), bfloat16': for the stages' messages."""
        return f"{describe_device(self.device)}, {str(self.dtype).removeprefix('torch.')}"


def run_tour(
    corpus_source: str = "shakespeare",
    workdir: Path = Path("out/tour"),
    device: str | torch.device = "auto",
    dtype: str | torch.dtype = "auto",
) -> TourContext:
    """Run every built stage in order; returns the context with everything the stages produced.
    device: auto (cuda, then mps, then cpu) or a name; dtype: auto (float32) or a name."""
    placement = resolve_device(device)
    ctx = TourContext(console=default_console, workdir=workdir, corpus_source=corpus_source,
                      device=placement, dtype=resolve_dtype(dtype, placement))  # fmt: skip
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    for number, (title, module_name) in enumerate(STAGES, start=1):
        ctx.console.rule(f"[bold]Stage {number}/{len(STAGES)}: {title}")
        if module_name is None:
            ctx.console.print("[dim]not yet built[/dim]\n")
            continue
        stage_start = time.perf_counter()
        importlib.import_module(f"llm_internals.tour.{module_name}").run(ctx)
        ctx.console.print(f"[dim]{title} took {time.perf_counter() - stage_start:.1f} s[/dim]\n")
    ctx.console.print(f"[bold green]Tour finished in {time.perf_counter() - started:.1f} s.")
    return ctx
