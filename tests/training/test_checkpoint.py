"""Checkpoints: a resumed run's losses equal the uninterrupted run's exactly; bad checkpoints
say what is wrong."""

from __future__ import annotations

import json

import pytest
import torch

from llm_internals.errors import LLMInternalsError
from llm_internals.models import load_checkpoint
from llm_internals.training.checkpoint import (
    flatten_state,
    load_training_checkpoint,
    unflatten_state,
)
from llm_internals.training.config import TrainConfig
from llm_internals.training.run import prepare_data
from llm_internals.training.trainer import Trainer, build_model

GPT2_TINY = dict(
    family="gpt2",
    d_model=32,
    n_layers=2,
    n_heads=4,
    position="learned",
    norm="layernorm",
    ffn="mlp",
    activation="gelu",
    tie_embeddings=True,
)
LLAMA_TINY = dict(d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, dropout=0.1)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny models gain nothing from a second thread, and on a CPU shared with other work
    spinning threads make each step many times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def text(shakespeare_text) -> str:
    return shakespeare_text[:40_000]


def config_for(tmp_path, **changes) -> TrainConfig:
    base = dict(
        model=GPT2_TINY,
        out_dir=str(tmp_path / "data"),
        batch_size=4,
        block_size=16,
        grad_accum=2,
        max_steps=8,
        warmup_steps=2,
        lr=3e-3,
        min_lr=3e-4,
        eval_interval=2,
        eval_iters=2,
        log_interval=1,
        checkpoint_interval=4,
        seed=3,
    )
    return TrainConfig(**{**base, **changes})


def new_trainer(config, text, run_dir):
    tokenizer, splits = prepare_data(config, text=text)
    model = build_model(config, tokenizer.vocab_size)
    return Trainer(config, model, tokenizer, splits, run_dir=run_dir, show_progress=False), splits


@pytest.mark.parametrize(
    "changes",
    [{}, {"optimizer": "muon"}, {"model": LLAMA_TINY}],  # dropout: the torch RNG is restored too
    ids=["adamw-gpt2", "muon-gpt2", "adamw-llama-dropout"],
)
def test_resume_continues_exactly(tmp_path, text, changes):
    config = config_for(tmp_path, **changes)
    whole, _ = new_trainer(config, text, tmp_path / "whole")
    whole_result = whole.train()

    interrupted, splits = new_trainer(config, text, tmp_path / "parts")
    interrupted.train(until=5)  # "crashes" after step 5: the last checkpoint is step 4
    resumed = Trainer.from_checkpoint(
        tmp_path / "parts", splits, run_dir=tmp_path / "parts", show_progress=False
    )
    assert resumed.step == 4
    resumed_result = resumed.train()

    assert resumed_result.step_losses == whole_result.step_losses  # exactly, every step
    assert without_timings(resumed_result.history) == without_timings(whole_result.history)
    for (name, a), (_, b) in zip(
        whole.model.state_dict().items(), resumed.model.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    log = (tmp_path / "parts" / "log.jsonl").read_text().splitlines()
    assert without_timings([json.loads(line) for line in log]) == without_timings(
        whole_result.history
    )


def without_timings(records: list[dict]) -> list[dict]:
    """Log records minus wall-clock fields (the same losses, lrs, norms and evals)."""
    return [{k: v for k, v in r.items() if k not in ("elapsed_s", "tokens_per_s")} for r in records]


def test_checkpoint_folder_is_a_loadable_model(tmp_path, text):
    config = config_for(tmp_path, max_steps=4)
    trainer, _ = new_trainer(config, text, tmp_path / "run")
    trainer.train()
    model = load_checkpoint(tmp_path / "run" / "step-00000004")
    x = torch.randint(0, model.config.vocab_size, (1, 8))
    torch.testing.assert_close(model(x), trainer.model(x), rtol=0, atol=0)
    assert (tmp_path / "run" / "latest").read_text().strip() == "step-00000004"


def test_optimizer_state_round_trips_through_tensors_and_json():
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1, betas=(0.8, 0.9))
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    tensors: dict[str, torch.Tensor] = {}
    skeleton = json.loads(json.dumps(flatten_state(optimizer.state_dict(), tensors)))
    restored = unflatten_state(skeleton, tensors, "test")
    original = optimizer.state_dict()
    assert restored["param_groups"] == original["param_groups"]
    assert set(restored["state"]) == {0, 1}  # integer keys survive JSON
    for key in ("exp_avg", "exp_avg_sq", "step"):
        assert torch.equal(restored["state"][0][key], original["state"][0][key])


@pytest.fixture
def saved_run(tmp_path, text):
    config = config_for(tmp_path, max_steps=4)
    trainer, _ = new_trainer(config, text, tmp_path / "run")
    trainer.train()
    return tmp_path / "run" / "step-00000004"


def test_truncated_optimizer_file_is_named(saved_run):
    path = saved_run / "optimizer.safetensors"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(
        LLMInternalsError, match="optimizer.safetensors: not a readable safetensors"
    ):
        load_training_checkpoint(saved_run)


def test_missing_state_file_is_named(saved_run):
    (saved_run / "trainer_state.json").unlink()
    with pytest.raises(LLMInternalsError, match="neither a checkpoint"):
        load_training_checkpoint(saved_run)


def test_wrong_format_version_is_named(saved_run):
    path = saved_run / "trainer_state.json"
    state = json.loads(path.read_text())
    state["format_version"] = 99
    path.write_text(json.dumps(state))
    with pytest.raises(LLMInternalsError, match="format_version 99 is not supported"):
        load_training_checkpoint(saved_run)


def test_weights_that_do_not_fit_the_config_are_named(saved_run):
    path = saved_run / "config.json"
    meta = json.loads(path.read_text())
    meta["config"]["d_model"] = 64
    path.write_text(json.dumps(meta))
    with pytest.raises(LLMInternalsError, match="has shape"):
        load_training_checkpoint(saved_run)


def test_latest_pointing_nowhere_is_named(saved_run):
    (saved_run.parent / "latest").write_text("step-00000999\n")
    with pytest.raises(LLMInternalsError, match="latest names step-00000999"):
        load_training_checkpoint(saved_run.parent)
