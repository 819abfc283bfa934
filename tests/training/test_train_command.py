"""`llm-internals train` end to end (config file, flag and --set overrides, --resume), and the
tour's "model" and "training" stages on a small text."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from rich.console import Console

import llm_internals.tour.model as tour_model
import llm_internals.tour.training as tour_training
from llm_internals.cli import main
from llm_internals.tour import TourContext
from llm_internals.training.config import TrainConfig

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny models gain nothing from a second thread, and on a CPU shared with other work
    spinning threads make each step many times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_shipped_configs_load_and_the_tour_config_matches_its_file():
    for path in sorted((ROOT / "configs").glob("*.toml")):
        TrainConfig.load(path)
    assert TrainConfig.load(ROOT / "configs" / "tour.toml") == tour_training.TOUR_CONFIG
    char = TrainConfig.load(ROOT / "configs" / "shakespeare-char.toml")
    assert (char.batch_size, char.block_size, char.max_steps, char.lr) == (12, 64, 2000, 1e-3)
    assert {k: char.model[k] for k in ("n_layers", "n_heads", "d_model", "dropout")} == {
        "n_layers": 4,
        "n_heads": 4,
        "d_model": 128,
        "dropout": 0.0,
    }


def test_train_command_with_overrides_then_resume(tmp_path, shakespeare_text, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(shakespeare_text[:20_000])
    config = tmp_path / "run.toml"
    config.write_text(f'corpus = "{corpus}"\nmax_steps = 50\n[model]\nd_model = 32\nn_heads = 2\n')
    out = tmp_path / "out"
    args = [
        "train",
        "--config",
        str(config),
        "--out-dir",
        str(out),
        "--max-steps",
        "4",
        "--eval-interval",
        "2",
        "--eval-iters",
        "1",
        "--log-interval",
        "1",
        "--checkpoint-interval",
        "2",
        "--set",
        "model.n_layers=1",
        "--no-fast",
    ]
    assert main(args) == 0
    saved = json.loads((out / "step-00000004" / "trainer_state.json").read_text())
    cfg = saved["train_config"]
    assert cfg["max_steps"] == 4 and cfg["fast"] is False
    assert cfg["model"] == {"d_model": 32, "n_heads": 2, "n_layers": 1}
    assert main(["train", "--resume", str(out), "--max-steps", "6"]) == 0
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3, 4, 5, 6]
    assert "Resuming" in capsys.readouterr().out


def test_train_command_reports_a_bad_config_in_one_line(tmp_path, capsys):
    config = tmp_path / "bad.toml"
    config.write_text("batch_size = 0\n")
    assert main(["train", "--config", str(config)]) == 2
    assert "batch_size must be a positive integer, got 0" in capsys.readouterr().out


def test_unigram_baselines_match_a_direct_count():
    train = np.array([0, 0, 1, 2, 2, 2], dtype=np.uint16)
    val = np.array([0, 3], dtype=np.uint16)
    entropy, val_ce = tour_training.unigram_baselines(train, val, vocab_size=4)
    counts = {0: 3, 1: 2, 2: 4, 3: 1}  # add-one smoothed
    p = {k: c / 10 for k, c in counts.items()}
    assert entropy == pytest.approx(-sum(q * np.log(q) for q in p.values()))
    assert val_ce == pytest.approx(-(np.log(p[0]) + np.log(p[3])) / 2)


def test_tour_model_and_training_stages(tmp_path, shakespeare_text, monkeypatch):
    small_model = {**tour_training.TOUR_CONFIG.model, "d_model": 32, "n_layers": 1}
    quick = tour_training.TOUR_CONFIG.replace(
        model=small_model,
        max_steps=4,
        batch_size=4,
        block_size=32,
        eval_interval=2,
        eval_iters=1,
        sample_tokens=5,
        dtype="float32",
    )
    monkeypatch.setattr(tour_training, "TOUR_CONFIG", quick)
    monkeypatch.setattr(tour_model, "TOUR_CONFIG", quick)
    monkeypatch.setattr(tour_training, "FALLBACK_VOCAB", 300)
    monkeypatch.setattr(tour_model, "FALLBACK_VOCAB", 300)
    text = shakespeare_text[:30_000]
    console = Console(record=True, width=120)
    ctx = TourContext(
        console=console,
        workdir=tmp_path,
        corpus_source="test",
        text=text,
        train_text=text[:27_000],
        val_text=text[27_000:],
    )
    tour_model.run(ctx)
    untrained = ctx.artifacts["model"]
    tour_training.run(ctx)
    shown = console.export_text()
    assert "parameters by component" in shown and "unigram entropy" in shown
    assert ctx.artifacts["model"] is untrained  # the stage trained the model it was handed
    assert ctx.artifacts["model"].config.vocab_size == 300
    assert (tmp_path / "model" / "model.safetensors").exists()
    evals = [r["val_loss"] for r in ctx.artifacts["train_result"].history if "val_loss" in r]
    assert len(evals) == 2 and evals[1] < evals[0]
    assert "time limit" not in shown


def test_tour_training_says_when_its_time_limit_stopped_it(tmp_path, shakespeare_text, monkeypatch):
    small_model = {**tour_training.TOUR_CONFIG.model, "d_model": 32, "n_layers": 1}
    quick = tour_training.TOUR_CONFIG.replace(
        model=small_model, max_steps=50, max_minutes=1e-6, batch_size=2, block_size=16,
        eval_interval=0, eval_iters=1, sample_tokens=2, dtype="float32",
    )  # fmt: skip
    monkeypatch.setattr(tour_training, "TOUR_CONFIG", quick)
    monkeypatch.setattr(tour_training, "FALLBACK_VOCAB", 260)
    text = shakespeare_text[:5_000]
    console = Console(record=True, width=200)
    ctx = TourContext(console=console, workdir=tmp_path, corpus_source="test", text=text,
                      train_text=text[:4_500], val_text=text[4_500:])  # fmt: skip
    tour_training.run(ctx)
    assert ctx.artifacts["train_result"].stop_reason == "time_limit"
    assert "stopped on its time limit (1e-06 minutes) at step 1 of 50" in console.export_text()


def _train_args(tmp_path, shakespeare_text, out, *extra):
    corpus = tmp_path / "corpus.txt"
    if not corpus.exists():
        corpus.write_text(shakespeare_text[:20_000])
    config = tmp_path / "run.toml"
    config.write_text(f'corpus = "{corpus}"\n[model]\nd_model = 32\nn_heads = 2\nn_layers = 1\n')
    return ["train", "--config", str(config), "--out-dir", str(out), "--eval-iters", "1",
            "--eval-interval", "0", "--log-interval", "1", "--device", "cpu", *extra]  # fmt: skip


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_resuming_a_copied_run_writes_only_into_the_copy(tmp_path, shakespeare_text, capsys):
    import shutil

    run, copy = tmp_path / "run", tmp_path / "copy"
    args = _train_args(tmp_path, shakespeare_text, run, "--max-steps", "4",
                       "--checkpoint-interval", "2")  # fmt: skip
    assert main(args) == 0
    shutil.copytree(run, copy)
    before = _snapshot(run)
    assert main(["train", "--resume", str(copy), "--max-steps", "6"]) == 0
    assert _snapshot(run) == before  # the original run is untouched
    assert (copy / "latest").read_text().strip() == "step-00000006"
    saved = json.loads((copy / "step-00000006" / "trainer_state.json").read_text())
    assert saved["train_config"]["out_dir"] == str(copy)
    records = [json.loads(line) for line in (copy / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3, 4, 5, 6]
    assert f"Checkpoints and log.jsonl are in {copy}" in capsys.readouterr().out.replace("\n", "")


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--set", "model.d_model=64"], "resume cannot change --set model.d_model=64"),
        (["--tokenizer", "bpe"], "resume cannot change --tokenizer 'bpe'"),
        (["--corpus", "x.txt"], "resume cannot change --corpus 'x.txt'"),
        (["--max-steps", "1"], "--max-steps 1 is below the checkpoint's step 2"),
        (["--out-dir", "elsewhere"], "a resume writes into the run it resumes"),
        (["--config", "run.toml"], "--config starts a new run"),
    ],
)
def test_resume_refuses_flags_it_would_ignore(tmp_path, shakespeare_text, capsys, flags, message):
    run = tmp_path / "run"
    assert main(_train_args(tmp_path, shakespeare_text, run, "--max-steps", "2")) == 0
    before = _snapshot(run)
    capsys.readouterr()
    assert main(["train", "--resume", str(run), *flags]) == 2
    assert message in capsys.readouterr().out.replace("\n", "")
    assert _snapshot(run) == before


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--lr", "inf"], "lr must be a finite number >= 0, got inf"),
        (["--grad-clip", "nan"], "grad_clip must be a finite number >= 0, got nan"),
        (["--set", "min_lr=nan"], "min_lr must be a finite number >= 0, got nan"),
        (["--device", "cuda:999"], "cuda:999"),  # past the last GPU of any machine
    ],
)
def test_impossible_numbers_and_devices_are_refused(tmp_path, capsys, flags, message):
    assert main(["train", "--out-dir", str(tmp_path), *flags]) == 2
    assert message in capsys.readouterr().out.replace("\n", "")


def test_diverging_run_exits_non_zero_and_keeps_its_last_good_checkpoint(
    tmp_path, shakespeare_text, capsys
):
    run = tmp_path / "run"
    args = _train_args(tmp_path, shakespeare_text, run, "--max-steps", "30",
                       "--checkpoint-interval", "1", "--warmup-steps", "0", "--lr", "1e30",
                       "--min-lr", "1e30", "--grad-clip", "0", "--optimizer", "adamw")  # fmt: skip
    assert main(args) == 2
    shown = capsys.readouterr().out.replace("\n", "")
    assert "loss became" in shown and "training stopped before applying that step" in shown
    latest = (run / "latest").read_text().strip()
    state = json.loads((run / latest / "trainer_state.json").read_text())
    assert all(np.isfinite(state["step_losses"]))
    assert state["step"] < 30


def test_time_limit_is_reported_with_the_step_reached(tmp_path, shakespeare_text, capsys):
    run = tmp_path / "run"
    args = _train_args(tmp_path, shakespeare_text, run, "--max-steps", "1000",
                       "--max-minutes", "0.00001")  # fmt: skip
    assert main(args) == 0
    shown = capsys.readouterr().out.replace("\n", "")
    assert "Stopped on the time limit (--max-minutes 1e-05) at step 1 of 1000." in shown


def test_run_training_resumes_a_copy_in_the_copy(tmp_path, shakespeare_text):
    """The library entry point, given the saved config (whose out_dir names the original)."""
    import shutil

    from llm_internals.training.checkpoint import load_training_checkpoint
    from llm_internals.training.run import run_training

    run, copy = tmp_path / "run", tmp_path / "copy"
    assert main(_train_args(tmp_path, shakespeare_text, run, "--max-steps", "2")) == 0
    shutil.copytree(run, copy)
    before = _snapshot(run)
    saved = load_training_checkpoint(copy).config
    assert saved.out_dir == str(run)
    result = run_training(saved.replace(max_steps=3), resume=copy, show_progress=False)
    assert result.steps == 3 and (copy / "step-00000003").is_dir()
    assert _snapshot(run) == before


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"max_steps = 5\nlr = \xff\n", "not UTF-8 text (byte 0xff"),
        (b"max_steps = = 5\n", "invalid TOML"),
        (b"model = []\n", "bad.toml: model must be a table of ModelConfig fields, got []"),
        (b"lr = inf\n", "bad.toml: lr must be a finite number >= 0, got inf"),
        (b"keep_checkpoints = -1\n", "keep_checkpoints must be an integer >= 0"),
    ],
)
def test_bad_config_files_are_one_line_naming_the_file(tmp_path, capsys, content, message):
    path = tmp_path / "bad.toml"
    path.write_bytes(content)
    assert main(["train", "--config", str(path)]) == 2
    assert message in capsys.readouterr().out.replace("\n", "")


def test_train_without_a_config_uses_the_default_model(tmp_path, shakespeare_text):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(shakespeare_text[:5_000])
    out = tmp_path / "out"
    args = ["train", "--corpus", str(corpus), "--out-dir", str(out), "--max-steps", "1",
            "--eval-iters", "1", "--set", "model.n_layers=1", "--device", "cpu"]  # fmt: skip
    assert main(args) == 0
    saved = json.loads((out / "step-00000001" / "config.json").read_text())["config"]
    assert (saved["family"], saved["d_model"], saved["n_heads"], saved["n_layers"]) == (
        "gpt2",
        128,
        4,
        1,
    )
