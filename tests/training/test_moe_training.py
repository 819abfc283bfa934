"""MoE models in the trainer: `train --set model.moe=...` end to end, the logged router figures,
zero coefficients == plain cross-entropy, the bias update wired after the step, the bias
method evening out a collapsed router on a seeded toy task, and DDP."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from llm_internals.cli import main
from llm_internals.layers.moe import MoEConfig, MoELayer
from llm_internals.layers.moe_balance import load_coefficient_of_variation
from llm_internals.models import load_checkpoint
from llm_internals.training.config import TrainConfig, parse_value
from llm_internals.training.data import BatchSampler
from llm_internals.training.loss import cross_entropy_fast
from llm_internals.training.moe_terms import MoETerms, moe_layers
from llm_internals.training.run import prepare_data
from llm_internals.training.trainer import Trainer, build_model

MOE = "{d_expert = 32, n_experts = 4, top_k = 2}"
LOG_KEYS = {"moe_aux_loss", "moe_z_loss", "moe_load_cv", "moe_dropped"}


@pytest.fixture(autouse=True)
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_moe_config(tmp_path, moe: str = MOE, **changes) -> TrainConfig:
    """The default train config (the GPT-2 character model) made tiny, with MoE FFNs."""
    overrides = {"model.d_model": 32, "model.n_layers": 2, "model.moe": parse_value(moe)}
    base = dict(out_dir=str(tmp_path), batch_size=4, block_size=16, max_steps=6,
                warmup_steps=2, lr=3e-3, min_lr=3e-4, eval_interval=0, eval_iters=2,
                log_interval=1, seed=5)  # fmt: skip
    return TrainConfig(**{**base, **changes}).with_overrides(overrides)


def make_trainer(config: TrainConfig, text: str) -> Trainer:
    tokenizer, splits = prepare_data(config, text=text)
    model = build_model(config, tokenizer.vocab_size)
    return Trainer(config, model, tokenizer, splits, show_progress=False)


def test_train_command_trains_a_moe_model_and_logs_router_figures(
    tmp_path, shakespeare_text, capsys
):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(shakespeare_text[:30_000])
    out = tmp_path / "out"
    moe = "{d_expert = 32, n_experts = 4, top_k = 2, capacity_factor = 1.0}"
    args = ["train", "--corpus", str(corpus), "--out-dir", str(out), "--max-steps", "40",
            "--batch-size", "8", "--block-size", "16", "--warmup-steps", "5", "--lr", "3e-3",
            "--eval-interval", "0", "--eval-iters", "2", "--log-interval", "1",
            "--set", "model.d_model=32", "--set", "model.n_layers=2", "--set", f"model.moe={moe}",
            "--moe-aux-loss-coef", "0.02"]  # fmt: skip
    assert main(args) == 0
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss" in r]
    assert len(steps) == 40 and all(set(r) >= LOG_KEYS for r in steps)
    first = sum(r["loss"] for r in steps[:5]) / 5
    last = sum(r["loss"] for r in steps[-5:]) / 5
    assert last < first - 0.5, (first, last)
    # capacity factor 1.0 with an uneven router drops pairs, and the log says how many
    assert any(r["moe_dropped"] > 0 for r in steps)
    assert all(r["moe_aux_loss"] >= 2 - 1e-3 for r in steps)  # k = 2 is the uniform minimum
    assert all(0 <= r["moe_load_cv"] <= (4 / 2 - 1) ** 0.5 + 1e-6 for r in steps)


def test_zero_coefficients_train_on_plain_cross_entropy(tmp_path, shakespeare_text):
    """With both coefficients 0 the gradients are exactly those of the cross-entropy alone; with
    the defaults they differ (the terms are in the objective)."""
    text = shakespeare_text[:20_000]
    grads = {}
    for coefs in ((0.0, 0.0), (0.01, 0.001)):
        config = tiny_moe_config(tmp_path, grad_clip=0.0, moe_aux_loss_coef=coefs[0],
                                 moe_z_loss_coef=coefs[1])  # fmt: skip
        trainer = make_trainer(config, text)
        reference = build_model(config, trainer.tokenizer.vocab_size)
        reference.load_state_dict(trainer.model.state_dict())
        sampler = BatchSampler(trainer.splits.train, config.batch_size, config.block_size,
                               config.seed)  # fmt: skip
        x, y = sampler.next_batch()
        loss = trainer.train_step()
        ce = cross_entropy_fast(reference(x).float(), y)
        ce.backward()
        assert loss == float(ce.detach())  # the logged loss is the cross-entropy either way
        grads[coefs] = [
            (p.grad, q.grad)
            for p, q in zip(trainer.model.parameters(), reference.parameters(), strict=True)
        ]
    assert all(torch.equal(g, r) for g, r in grads[(0.0, 0.0)])
    routers = [i for i, (g, _) in enumerate(grads[(0.01, 0.001)]) if g.shape == (4, 32)]
    assert routers and all(not torch.equal(*grads[(0.01, 0.001)][i]) for i in routers)


def test_bias_update_runs_after_each_step(tmp_path, shakespeare_text):
    config = tiny_moe_config(tmp_path, moe_bias_update_rate=0.25)
    trainer = make_trainer(config, shakespeare_text[:20_000])
    layers = moe_layers(trainer.model)
    assert len(layers) == 2
    trainer.train_step()
    stats = trainer.last_moe_stats
    tokens = config.batch_size * config.block_size
    for layer, load in zip(layers, stats.loads, strict=True):
        assert float(load.sum()) == tokens * 2  # k = 2 slots per token
        expected = 0.25 * torch.sign(load.mean() - load)
        assert torch.equal(layer.router.e_score_correction_bias, expected)


def test_bias_method_evens_out_a_collapsed_router():
    """A router skewed toward experts 0 and 1 (every token picks them) stays collapsed when
    trained without balancing: the unchosen experts get no gradient. The bias update, with the
    same seed and steps, brings the load's coefficient of variation far down."""

    def run(bias_rate: float) -> list[float]:
        torch.manual_seed(0)
        layer = MoELayer(MoEConfig(d_model=8, d_expert=8, n_experts=8, top_k=2))
        with torch.no_grad():
            layer.router.weight[:2, 0] += 8.0  # feature 0 is always 1: experts 0, 1 win
        target = torch.nn.Linear(8, 8)
        optimizer = torch.optim.AdamW(layer.parameters(), lr=1e-2)
        terms = MoETerms(layer, aux_coef=0.0, z_coef=0.0, bias_rate=bias_rate)
        generator = torch.Generator().manual_seed(1)
        cvs = []
        for _ in range(60):
            x = torch.randn(128, 8, generator=generator)
            x[:, 0] = 1.0
            terms.start_step()
            loss = (layer(x) - target(x).detach()).square().mean()
            optimizer.zero_grad()
            terms.add_terms(loss).backward()
            optimizer.step()
            cvs.append(terms.finish_step().load_cv)
        return cvs

    collapsed, balanced = run(0.0), run(0.1)
    most = (8 / 2 - 1) ** 0.5  # every token on the same 2 of 8 experts
    assert collapsed[0] == pytest.approx(most) and balanced[0] == pytest.approx(most)
    assert min(collapsed[-10:]) > 0.9 * most
    assert max(balanced[-10:]) < 0.3 * most
    assert load_coefficient_of_variation(torch.ones(8)) == 0.0


def test_moe_under_ddp_equals_one_process(tmp_path, shakespeare_text):
    """Two torchrun processes train a MoE model as one process does with the same global batch
    (no aux/z term: those are per-process averages; the bias update uses the global load), and
    an expert left without tokens on one process does not stop DDP."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(shakespeare_text[:20_000])
    moe = "{d_expert = 16, n_experts = 8, top_k = 1}"  # 8 experts, 32 tokens a process: idle ones
    flags = ["--corpus", str(corpus), "--batch-size", "4", "--block-size", "16",
             "--max-steps", "3", "--warmup-steps", "1", "--eval-interval", "0", "--eval-iters",
             "1", "--moe-aux-loss-coef", "0", "--moe-z-loss-coef", "0",
             "--moe-bias-update-rate", "0.001", "--set", "model.d_model=32",
             "--set", "model.n_layers=1", "--set", f"model.moe={moe}"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc-per-node", "2", "-m", "llm_internals.cli", "train",
               "--out-dir", str(tmp_path / "ddp"), *flags]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert main(["train", "--out-dir", str(tmp_path / "one"), *flags]) == 0
    ddp = load_checkpoint(tmp_path / "ddp" / "step-00000003")
    one = load_checkpoint(tmp_path / "one" / "step-00000003")
    bias = "blocks.0.ffn.router.e_score_correction_bias"
    assert torch.equal(ddp.state_dict()[bias], one.state_dict()[bias])
    assert ddp.state_dict()[bias].abs().sum() > 0
    for name, tensor in one.state_dict().items():
        torch.testing.assert_close(ddp.state_dict()[name], tensor, rtol=1e-4, atol=1e-5, msg=name)
