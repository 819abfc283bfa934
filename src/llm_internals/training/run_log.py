"""A training run's log: one JSON record per line in RUN/log.jsonl, and the progress bar's line.

    step_record(...)        {"step", "loss", "lr", "grad_norm", "tokens_per_s", "elapsed_s"}
                            plus the MoE terms (aux_loss, load_cv, dropped, ...) when the model
                            routes; written every log_interval steps
    append_record(dir, r)   add one record (evaluations add {"step", "train_loss", "val_loss"})
    rewrite_log(dir, rs)    after a resume: exactly the records up to the checkpoint's step
    progress_line(...)      "loss 3.1416 lr 3.00e-04 12,345 tok/s [aux .. cv .. drop ..]"

Only the main process calls the writers (the Trainer checks); the records are the same dicts
the Trainer keeps in its history and saves in each checkpoint.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from llm_internals.files import atomic_write_text
from llm_internals.training.moe_terms import MoEStepStats

LOG_FILE = "log.jsonl"


def step_record(
    step: int,
    loss: float,
    lr: float,
    grad_norm: float | None,
    tokens_per_s: float,
    elapsed_s: float,
    moe: MoEStepStats | None,
) -> dict[str, Any]:
    """What one logged optimizer step records (grad_norm None: clipping is off)."""
    return {
        "step": step,
        "loss": loss,
        "lr": lr,
        "grad_norm": grad_norm,
        "tokens_per_s": tokens_per_s,
        "elapsed_s": elapsed_s,
        **(moe.log_record() if moe else {}),
    }


def progress_line(loss: float, lr: float, tokens_per_s: float, moe: MoEStepStats | None) -> str:
    """The progress bar's description after a logged step."""
    line = f"loss {loss:.4f} lr {lr:.2e} {tokens_per_s:,.0f} tok/s"
    if moe:
        line += f" aux {moe.aux_loss:.3f} cv {moe.load_cv:.2f} drop {moe.dropped}"
    return line


def append_record(run_dir: Path, record: dict[str, Any]) -> None:
    """Add one record to RUN/log.jsonl (creating the folder and the file if needed)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / LOG_FILE, "a") as log:
        log.write(json.dumps(record) + "\n")


def rewrite_log(run_dir: Path, records: Iterable[dict[str, Any]]) -> None:
    """Replace RUN/log.jsonl by `records` in one atomic write (a resume drops the records past
    the checkpoint's step, which an interrupted run had logged but not saved)."""
    atomic_write_text(run_dir / LOG_FILE, "".join(json.dumps(r) + "\n" for r in records))
