"""Checkpoints: a resumed run's losses equal the uninterrupted run's exactly; bad checkpoints
say what is wrong."""

from __future__ import annotations

import json

import pytest
import torch

from llm_internals.errors import LLMInternalsError
from llm_internals.models import load_checkpoint
from llm_internals.training.checkpoint import (
    file_sha256,
    flatten_state,
    load_training_checkpoint,
    unflatten_state,
)
from llm_internals.training.config import TrainConfig
from llm_internals.training.run import prepare_data
from llm_internals.training.trainer import LossNotFinite, Trainer, build_model

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
    with pytest.raises(LLMInternalsError, match="optimizer.safetensors: SHA-256 does not match"):
        load_training_checkpoint(saved_run)


def test_without_checksums_a_truncated_file_is_still_named(saved_run):
    """Version-1 folders (written before checksums) load, and damage still gets a clear error."""
    state_path = saved_run / "trainer_state.json"
    state = json.loads(state_path.read_text())
    state["format_version"] = 1
    del state["checksums"]
    state_path.write_text(json.dumps(state))
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
    # config.json is covered by the checksum; recompute it to reach the shape check
    state_path = saved_run / "trainer_state.json"
    state = json.loads(state_path.read_text())
    state["checksums"]["config.json"] = file_sha256(path)
    state_path.write_text(json.dumps(state))
    with pytest.raises(LLMInternalsError, match="has shape"):
        load_training_checkpoint(saved_run)


def flip_byte(path, offset_from_end=5):
    data = bytearray(path.read_bytes())
    data[-offset_from_end] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.fixture
def run_with_two_checkpoints(tmp_path, text):
    config = config_for(tmp_path, max_steps=4, checkpoint_interval=2)
    trainer, splits = new_trainer(config, text, tmp_path / "run")
    trainer.train()
    assert sorted(p.name for p in (tmp_path / "run").glob("step-*")) == [
        "step-00000002",
        "step-00000004",
    ]
    return tmp_path / "run", splits


@pytest.mark.parametrize("damage", ["flipped weight byte", "broken state json", "bad latest"])
def test_damaged_latest_checkpoint_falls_back_with_a_warning(run_with_two_checkpoints, damage):
    run, splits = run_with_two_checkpoints
    if damage == "flipped weight byte":
        flip_byte(run / "step-00000004" / "model.safetensors")
        expected = "model.safetensors: SHA-256 does not match"
    elif damage == "broken state json":
        (run / "step-00000004" / "trainer_state.json").write_bytes(b'{"step": 4, "rng"')
        expected = "malformed JSON"
    else:
        (run / "latest").write_text("../../elsewhere\n")
        expected = "not a step-NNNNNNNN folder"
    warnings: list[str] = []
    checkpoint = load_training_checkpoint(run, warn=warnings.append)
    assert checkpoint.step == (4 if damage == "bad latest" else 2)
    assert len(warnings) == 1 and expected in warnings[0]
    resumed = Trainer.from_checkpoint(run, splits, run_dir=run, show_progress=False)
    assert resumed.step == checkpoint.step


def test_explicit_damaged_step_folder_and_all_damaged_run_are_errors(run_with_two_checkpoints):
    run, _ = run_with_two_checkpoints
    flip_byte(run / "step-00000004" / "optimizer.safetensors")
    with pytest.raises(LLMInternalsError, match="optimizer.safetensors: SHA-256 does not match"):
        load_training_checkpoint(run / "step-00000004")  # named explicitly: no fallback
    flip_byte(run / "step-00000002" / "tokenizer.json", offset_from_end=3)
    with pytest.raises(LLMInternalsError, match="no intact checkpoint"):
        load_training_checkpoint(run)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("step", "4", "field 'step' must be an integer >= 0"),
        ("rng", {"batches": "!!!", "torch": "AA=="}, "field 'rng.batches' is not a saved"),
        ("data", {"batches_drawn": -1}, "batches_drawn' must be an integer >= 0"),
        ("history", [1, 2], "field 'history' must be a list of records"),
        ("step_losses", ["x"], "field 'step_losses' must be a list of numbers"),
        ("optimizer", {"items": 5}, "unreadable optimizer state entry"),
        ("train_config", [], "field 'train_config' must be an object"),
        ("checksums", {"config.json": 5}, "field 'checksums' must map file names"),
    ],
)
def test_damaged_trainer_state_fields_are_named(saved_run, field, value, message):
    path = saved_run / "trainer_state.json"
    state = json.loads(path.read_text())
    state[field] = value
    path.write_text(json.dumps(state))
    with pytest.raises(LLMInternalsError, match=message) as info:
        load_training_checkpoint(saved_run)
    assert "trainer_state.json" in info.value.message or "optimizer.safetensors" in (
        info.value.message
    )


def test_orphaned_staging_folders_are_removed_at_start(tmp_path, text):
    run = tmp_path / "run"
    orphan = run / ".step-00000002.tmp-4242"
    orphan.mkdir(parents=True)
    (orphan / "model.safetensors").write_bytes(b"half written")
    config = config_for(tmp_path, max_steps=2)
    new_trainer(config, text, run)
    assert not orphan.exists()


@pytest.mark.parametrize(("keep", "expected"), [(3, [2, 3, 4]), (0, [1, 2, 3, 4])])
def test_keep_checkpoints_sets_how_many_step_folders_remain(tmp_path, text, keep, expected):
    config = config_for(tmp_path, max_steps=4, checkpoint_interval=1, keep_checkpoints=keep,
                        eval_interval=0)  # fmt: skip
    trainer, _ = new_trainer(config, text, tmp_path / "run")
    trainer.train()
    found = sorted(int(p.name.removeprefix("step-")) for p in (tmp_path / "run").glob("step-*"))
    assert found == expected


def test_nan_loss_stops_without_applying_the_step_and_keeps_the_last_checkpoint(tmp_path, text):
    config = config_for(tmp_path, max_steps=8, checkpoint_interval=2)
    trainer, _ = new_trainer(config, text, tmp_path / "run")
    trainer.train(until=5)
    with torch.no_grad():
        next(trainer.model.parameters()).view(-1)[0] = float("nan")
    poisoned = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    with pytest.raises(LossNotFinite, match="loss became nan at step 6.*step-00000004"):
        trainer.train()
    assert trainer.step == 5
    for name, tensor in trainer.model.state_dict().items():  # the bad step was not applied
        assert torch.equal(tensor, poisoned[name]) or tensor.isnan().any(), name
        assert torch.equal(tensor.isnan(), poisoned[name].isnan()), name
    assert (tmp_path / "run" / "latest").read_text().strip() == "step-00000004"
    kept = load_checkpoint(tmp_path / "run" / "step-00000004")
    assert all(torch.isfinite(p).all() for p in kept.parameters())


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"model": {**GPT2_TINY, "d_model": 64}}, "--set model.d_model=64"),
        ({"tokenizer": "bpe"}, "--tokenizer 'bpe'"),
        ({"corpus": "other.txt"}, "--corpus 'other.txt'"),
        ({"max_steps": 3}, "--max-steps 3 is below the checkpoint's step 4"),
    ],
)
def test_resume_refuses_changes_to_the_past(saved_run, text, tmp_path, changes, message):
    saved = load_training_checkpoint(saved_run)
    config = saved.config.replace(**changes)
    _, splits = prepare_data(saved.config, text=text)
    with pytest.raises(LLMInternalsError, match=message):
        Trainer.from_checkpoint(saved_run, splits, config=config, show_progress=False)


def test_every_file_a_resume_reads_needs_a_checksum_and_stray_files_are_ignored(saved_run):
    (saved_run / "notes.txt").write_text("a user's note beside the checkpoint")
    assert load_training_checkpoint(saved_run).step == 4
    path = saved_run / "trainer_state.json"
    state = json.loads(path.read_text())
    del state["checksums"]["optimizer.safetensors"]
    path.write_text(json.dumps(state))
    with pytest.raises(LLMInternalsError, match="optimizer.safetensors have no checksum"):
        load_training_checkpoint(saved_run)
