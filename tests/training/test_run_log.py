"""training/run_log.py: each logged field comes from its own argument (a swapped lr/grad_norm
would plot the wrong curve), and the JSONL file holds exactly the records written (a resume's
rewrite drops the ones past the checkpoint)."""

from __future__ import annotations

import json

from llm_internals.training.run_log import (
    LOG_FILE,
    append_record,
    progress_line,
    rewrite_log,
    step_record,
)


def test_step_record_names_each_argument():
    record = step_record(7, 2.5, 3e-4, 0.75, 1234.0, 9.5, moe=None)
    assert record == {"step": 7, "loss": 2.5, "lr": 3e-4, "grad_norm": 0.75,
                      "tokens_per_s": 1234.0, "elapsed_s": 9.5}  # fmt: skip
    assert step_record(1, 1.0, 1.0, None, 1.0, 1.0, moe=None)["grad_norm"] is None


def test_progress_line_without_moe():
    assert progress_line(3.14159, 3e-4, 12345.0, None) == "loss 3.1416 lr 3.00e-04 12,345 tok/s"


def test_append_then_rewrite(tmp_path):
    run = tmp_path / "run"
    records = [{"step": 1, "loss": 3.0}, {"step": 2, "loss": 2.0}, {"step": 3, "loss": 1.0}]
    for record in records:
        append_record(run, record)
    lines = (run / LOG_FILE).read_text().splitlines()
    assert [json.loads(line) for line in lines] == records
    rewrite_log(run, records[:2])
    assert [json.loads(line) for line in (run / LOG_FILE).read_text().splitlines()] == records[:2]
