"""The trainer against a plain PyTorch loop (torch.optim.AdamW, F.cross_entropy, torch's
clipping), plus gradient accumulation, logs, configs and bf16."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from llm_internals.errors import LLMInternalsError
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


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny models gain nothing from a second thread, and on a CPU shared with other work
    spinning threads make each step many times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_config(tmp_path, **changes) -> TrainConfig:
    base = dict(
        model=GPT2_TINY,
        out_dir=str(tmp_path),
        batch_size=4,
        block_size=16,
        max_steps=6,
        warmup_steps=2,
        lr=3e-3,
        min_lr=3e-4,
        eval_interval=0,
        eval_iters=2,
        log_interval=1,
        seed=5,
    )
    return TrainConfig(**{**base, **changes})


@pytest.fixture(scope="module")
def text(shakespeare_text) -> str:
    return shakespeare_text[:40_000]


def make_trainer(config: TrainConfig, text: str, run_dir=None) -> Trainer:
    tokenizer, splits = prepare_data(config, text=text)
    model = build_model(config, tokenizer.vocab_size)
    return Trainer(config, model, tokenizer, splits, run_dir=run_dir, show_progress=False)


def reference_losses(config: TrainConfig, trainer: Trainer, steps: int) -> list[float]:
    """nanoGPT's loop in plain PyTorch: same init, same batches, torch's optimizer and loss."""
    model = build_model(config, trainer.tokenizer.vocab_size)
    model.load_state_dict(trainer.model.state_dict())  # the trainer's model has not stepped
    params = list(model.parameters())
    optimizer = torch.optim.AdamW(
        [
            {"params": [p for p in params if p.ndim >= 2], "weight_decay": config.weight_decay},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
        ],
        lr=config.lr,
        betas=(config.beta1, config.beta2),
    )
    tokens = torch.from_numpy(trainer.splits.train.astype("int64"))
    generator = torch.Generator().manual_seed(config.seed)
    losses = []
    for step in range(steps):
        if step < config.warmup_steps:
            lr = config.lr * (step + 1) / config.warmup_steps
        else:
            ratio = (step - config.warmup_steps) / (config.max_steps - config.warmup_steps)
            lr = config.min_lr + 0.5 * (1 + math.cos(math.pi * ratio)) * (config.lr - config.min_lr)
        for group in optimizer.param_groups:
            group["lr"] = lr
        starts = torch.randint(
            len(tokens) - config.block_size, (config.batch_size,), generator=generator
        )
        x = torch.stack([tokens[s : s + config.block_size] for s in starts])
        y = torch.stack([tokens[s + 1 : s + 1 + config.block_size] for s in starts])
        logits = model(x)
        loss = F.cross_entropy(logits.view(-1, logits.shape[-1]), y.view(-1))
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        losses.append(loss.item())
    return losses


def test_trainer_matches_a_plain_pytorch_loop(tmp_path, text):
    config = tiny_config(tmp_path)
    trainer = make_trainer(config, text)
    expected = reference_losses(config, trainer, config.max_steps)
    result = trainer.train()
    assert result.step_losses == pytest.approx(expected, rel=1e-5, abs=1e-5)
    assert result.step_losses[-1] < result.step_losses[0] - 0.2


def test_gradient_accumulation_equals_the_big_batch(tmp_path, text):
    big = make_trainer(tiny_config(tmp_path, batch_size=8), text).train()
    accum = make_trainer(tiny_config(tmp_path, batch_size=4, grad_accum=2), text).train()
    assert accum.step_losses == pytest.approx(big.step_losses, rel=1e-5, abs=1e-5)


def test_muon_trains(tmp_path, text):
    config = tiny_config(tmp_path, optimizer="muon", max_steps=10)
    result = make_trainer(config, text).train()
    assert result.step_losses[-1] < result.step_losses[0] - 0.2


def test_bf16_autocast_gives_close_losses(tmp_path, text):
    fp32 = make_trainer(tiny_config(tmp_path, max_steps=2), text).train()
    bf16 = make_trainer(tiny_config(tmp_path, max_steps=2, dtype="bfloat16"), text).train()
    assert bf16.step_losses[0] == pytest.approx(fp32.step_losses[0], abs=0.05)
    assert bf16.step_losses[0] != fp32.step_losses[0]  # autocast really ran in bfloat16


def test_log_eval_and_samples(tmp_path, text):
    config = tiny_config(
        tmp_path, max_steps=4, log_interval=2, eval_interval=2, sample_interval=4, sample_tokens=12
    )
    trainer = make_trainer(config, text, run_dir=tmp_path / "run")
    result = trainer.train()
    records = [
        json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()
    ]
    assert records == result.history
    steps = [r["step"] for r in records if "loss" in r]
    assert steps == [2, 4]
    assert [r["loss"] for r in records if "loss" in r] == [
        result.step_losses[1],
        result.step_losses[3],
    ]
    evals = [r for r in records if "val_loss" in r]
    assert [r["step"] for r in evals] == [2, 4] and evals[-1]["val_loss"] == result.final_val_loss
    assert len(result.samples) == 1 and len(result.samples[0]) == 12  # 12 characters


def test_config_from_toml_with_overrides(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('max_steps = 50\nlr = 1\noptimizer = "muon"\n[model]\nd_model = 64\n')
    config = TrainConfig.load(path)
    assert config.max_steps == 50 and config.lr == 1.0 and config.model == {"d_model": 64}
    changed = config.with_overrides({"max_steps": 7, "model.n_layers": 3})
    assert changed.max_steps == 7 and changed.model == {"d_model": 64, "n_layers": 3}


@pytest.mark.parametrize(
    "content, message",
    [
        ("max_stepz = 3\n", "unknown key.*max_stepz"),
        ('max_steps = "ten"\n', "max_steps must be int"),
        ('optimizer = "lion"\n', "unknown optimizer 'lion'"),
        ("lr = 1e-4\nmin_lr = 1e-3\n", "min_lr=0.001 is above lr"),
        ("[model]\nvocab_size = 3\n", "must not set vocab_size"),
        ("max_steps = \n", "invalid TOML"),
    ],
)
def test_bad_configs_name_the_key(tmp_path, content, message):
    path = tmp_path / "bad.toml"
    path.write_text(content)
    with pytest.raises(LLMInternalsError, match=message):
        TrainConfig.load(path)


def test_warmup_from_zero_reaches_the_trainer(tmp_path, text):
    config = tiny_config(tmp_path, warmup_from_zero=True, warmup_steps=4, max_steps=5)
    result = make_trainer(config, text).train()
    lrs = [r["lr"] for r in result.history if "lr" in r]
    assert lrs == pytest.approx(
        [0.0, 0.25 * config.lr, 0.5 * config.lr, 0.75 * config.lr, config.lr]
    )


@pytest.mark.cuda  # skipped where torch sees no GPU (tests/conftest.py)
def test_training_on_cuda_matches_the_cpu_and_saves_cpu_tensors(tmp_path, text):
    """The same seed draws the same batches on any device; fp32 losses agree to rounding."""
    from llm_internals.models import load_checkpoint

    config = tiny_config(tmp_path, checkpoint_interval=3)
    tokenizer, splits = prepare_data(config, text=text)
    results = {}
    for device in ("cpu", "cuda"):
        model = build_model(config, tokenizer.vocab_size)
        trainer = Trainer(config, model, tokenizer, splits, run_dir=tmp_path / device,
                          show_progress=False, device=device)  # fmt: skip
        assert next(trainer.model.parameters()).device.type == device
        results[device] = trainer.train().step_losses
    assert results["cuda"] == pytest.approx(results["cpu"], rel=1e-4, abs=1e-4)
    on_cpu = load_checkpoint(tmp_path / "cuda" / "step-00000006")  # a CPU model, same weights
    assert next(on_cpu.parameters()).device.type == "cpu"
    for name, tensor in on_cpu.state_dict().items():
        assert torch.equal(tensor, trainer.model.state_dict()[name].cpu()), name
    resumed = Trainer.from_checkpoint(tmp_path / "cuda" / "step-00000003", splits,
                                      run_dir=tmp_path / "cuda", show_progress=False,
                                      device="cuda")  # fmt: skip
    assert resumed.train().step_losses == pytest.approx(results["cuda"], rel=1e-5, abs=1e-6)
