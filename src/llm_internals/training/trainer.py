"""The training loop: batches in, loss down, with everything a real run needs around it.

One optimizer step:

    lr = schedule(step)                         linear warmup, cosine decay to min_lr
    for each of grad_accum micro-batches:       gradients add up over micro-batches
        loss_j = cross_entropy(model(x_j), y_j) / grad_accum ;  loss_j.backward()
    clip the global gradient norm to grad_clip
    optimizer.step()                            our AdamW, or Muon + AdamW by parameter role

MoE models add the balancing terms to each micro-batch's loss and move the routers' selection
biases after the step (training/moe_terms.py); the logged `loss` stays the cross-entropy, and
the terms, the load's coefficient of variation and the dropped pairs are logged beside it.

Around it: a progress bar (step, loss, lr, tokens/s, time left), periodic train/validation loss
on fixed batches, sample generations, a JSONL log (training/run_log.py), checkpoints, exact
resume, and DDP.

The model and batches live on `device` (CPU, CUDA or MPS); token sampling stays on the CPU so a
seed draws the same batches everywhere, and checkpoints hold CPU tensors. A step whose loss is
NaN or infinite is not applied: training stops with LossNotFinite, and the run folder keeps its
last good checkpoint.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

from llm_internals.console import console as default_console
from llm_internals.console import progress
from llm_internals.devices import resolve_device
from llm_internals.errors import LLMInternalsError
from llm_internals.models import DecoderLM
from llm_internals.training.builders import build_model, build_optimizer
from llm_internals.training.checkpoint import (
    TrainingCheckpoint,
    load_training_checkpoint,
    remove_orphaned_staging,
    save_training_checkpoint,
)
from llm_internals.training.checkpoint_state import generator_state, restore_generators
from llm_internals.training.config import TrainConfig, check_resume_config
from llm_internals.training.data import BatchSampler, TokenSplits
from llm_internals.training.distributed import DistributedContext, wrap_model
from llm_internals.training.gradients import clip_grad_norm
from llm_internals.training.loss import cross_entropy_fast
from llm_internals.training.module_checkpoint import load_optimizer_state
from llm_internals.training.moe_terms import MoEStepStats, MoETerms
from llm_internals.training.preview import generate_preview
from llm_internals.training.run_log import append_record, progress_line, rewrite_log, step_record
from llm_internals.training.schedule import WarmupCosine, set_lr

__all__ = ["LossNotFinite", "TrainResult", "Trainer", "build_model", "build_optimizer"]


class LossNotFinite(LLMInternalsError):
    """The loss became NaN or infinite; the step that produced it was not applied."""


@dataclass
class TrainResult:
    """What a run measured. history holds every logged record (as written to the JSONL log).
    stop_reason: "max_steps" (done), "time_limit" (max_minutes ran out first) or "until"."""

    steps: int
    final_loss: float
    final_val_loss: float | None
    elapsed_s: float
    tokens_per_s: float
    step_losses: list[float] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    samples: list[str] = field(default_factory=list)
    stop_reason: str = "max_steps"
    max_steps: int = 0


class Trainer:
    """Trains `model` on `splits` with `config`; rank 0 writes logs and checkpoints to run_dir."""

    def __init__(
        self,
        config: TrainConfig,
        model: DecoderLM,
        tokenizer: Any,
        splits: TokenSplits,
        run_dir: str | Path | None = None,
        console: Console | None = None,
        dist_ctx: DistributedContext | None = None,
        show_progress: bool = True,
        device: str | torch.device | None = None,
    ) -> None:
        """`device`: where model and batches go ("auto", "cpu", "cuda:1", ...); None keeps the
        model where it is."""
        self.config = config
        self.device = next(model.parameters()).device if device is None else resolve_device(device)
        self.model = model.to(self.device)
        self.tokenizer = tokenizer
        self.splits = splits
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.console = console or default_console
        self.dist = dist_ctx or DistributedContext()
        self.show_progress = show_progress and self.dist.is_main
        if self.run_dir is not None and self.dist.is_main:
            for orphan in remove_orphaned_staging(self.run_dir):
                self.console.print(f"Removed {orphan.name}, left behind by an interrupted save.")
        self.train_model = wrap_model(model, self.dist)
        self.optimizer, self.base_lrs = build_optimizer(model, config)
        self.schedule = WarmupCosine(
            config.lr,
            config.min_lr,
            min(config.warmup_steps, config.max_steps),
            config.max_steps,
            from_zero=config.warmup_from_zero,
        )
        self.batches = BatchSampler(
            splits.train,
            config.batch_size * config.grad_accum,
            config.block_size,
            config.seed,
            device=self.device,
        )
        self.moe = MoETerms(
            model, config.moe_aux_loss_coef, config.moe_z_loss_coef, config.moe_bias_update_rate
        )
        self.last_moe_stats: MoEStepStats | None = None
        self.step = 0
        self.step_losses: list[float] = []
        self.history: list[dict[str, Any]] = []
        self.samples: list[str] = []
        self._last_val: float | None = None

    # ----- resume ------------------------------------------------------------------------------
    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path | TrainingCheckpoint,
        splits: TokenSplits,
        config: TrainConfig | None = None,
        **kwargs: Any,
    ) -> Trainer:
        """Continue a run: model, optimizer, RNG states, data position and log as saved.

        `path` is a run folder (a damaged newest checkpoint falls back to the one before, with
        a warning), a step-* folder, or an already loaded checkpoint. `config` may change fields
        that do not alter the run's past (max_steps, intervals, lr); changing the model,
        tokenizer, corpus or optimizer is refused (check_resume_config).
        """
        from llm_internals.models.loading import load_tokenizer

        if isinstance(path, TrainingCheckpoint):
            ckpt = path
        else:
            ckpt = load_training_checkpoint(
                path, warn=(kwargs.get("console") or default_console).print
            )
        config = config or ckpt.config
        check_resume_config(ckpt.config, config, ckpt.step)
        tokenizer = load_tokenizer(ckpt.directory / "tokenizer.json")
        model = ckpt.model
        if config.fast:
            if model.config.attn_impl != "flash":  # flash was asked for: keep it
                model.set_attn_impl("sdpa")
            model.set_fused_ops(True)
        trainer = cls(config, model, tokenizer, splits, **kwargs)
        load_optimizer_state(trainer.optimizer, ckpt.optimizer_state, str(ckpt.directory))
        trainer.step = ckpt.step
        state = ckpt.state
        restore_generators(state, trainer.batches, trainer.device)
        trainer.step_losses = list(state["step_losses"])
        trainer.history = [r for r in state["history"] if r["step"] <= ckpt.step]
        trainer._rewrite_log()
        return trainer

    def save_checkpoint(self) -> Path | None:
        if self.run_dir is None or not self.dist.is_main:
            return None
        state = {
            **generator_state(self.batches, self.device),
            "step_losses": self.step_losses,
            "history": self.history,
            "world_size": self.dist.world_size,
        }
        return save_training_checkpoint(
            self.run_dir,
            self.step,
            self.model,
            self.optimizer,
            self.config,
            self.tokenizer,
            state,
            keep=self.config.keep_checkpoints,
        )

    # ----- one step ----------------------------------------------------------------------------
    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.config.dtype == "bfloat16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _loss(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with self._autocast():
            logits = model(x)
        return cross_entropy_fast(logits.float(), y)

    def train_step(self) -> float:
        """One optimizer step; returns the mean loss over its micro-batches (and processes).
        A non-finite loss returns without touching the weights (the step is not counted)."""
        cfg = self.config
        lr = set_lr(self.optimizer, self.schedule, self.step, self.base_lrs)
        x, y = self.batches.next_batch()
        self.optimizer.zero_grad(set_to_none=True)
        total = torch.zeros((), device=self.device)
        self.moe.start_step()
        micro_x, micro_y = x.chunk(cfg.grad_accum), y.chunk(cfg.grad_accum)
        for j, (mx, my) in enumerate(zip(micro_x, micro_y, strict=True)):
            last = j == cfg.grad_accum - 1
            sync = (
                contextlib.nullcontext()
                if last or not self.dist.enabled
                else self.train_model.no_sync()
            )
            with sync:
                loss = self._loss(self.train_model, self.dist.shard(mx), self.dist.shard(my))
                (self.moe.add_terms(loss) / cfg.grad_accum).backward()
            total += loss.detach()
        mean_loss = float(self.dist.mean(total / cfg.grad_accum))
        if not math.isfinite(mean_loss):
            self.optimizer.zero_grad(set_to_none=True)
            return mean_loss
        grad_norm = (
            clip_grad_norm(self.model.parameters(), cfg.grad_clip) if cfg.grad_clip > 0 else None
        )
        self.optimizer.step()
        self.last_moe_stats = self.moe.finish_step(self.dist.mean)
        self.step += 1
        self.step_losses.append(mean_loss)
        self._last_lr, self._last_grad_norm = lr, None if grad_norm is None else float(grad_norm)
        return mean_loss

    # ----- evaluation --------------------------------------------------------------------------
    @torch.no_grad()
    def estimate_loss(self, tokens: np.ndarray) -> float:
        """Mean loss over eval_iters batches drawn with a fixed seed (the same at every eval,
        so successive estimates differ only because the model changed)."""
        cfg = self.config
        sampler = BatchSampler(
            tokens, cfg.batch_size, cfg.block_size, seed=cfg.seed + 1, device=self.device
        )
        self.model.eval()
        losses = []
        for _ in range(cfg.eval_iters):
            x, y = sampler.next_batch()
            losses.append(self._loss(self.model, self.dist.shard(x), self.dist.shard(y)))
        self.model.train()
        return float(self.dist.mean(torch.stack(losses).mean()))

    def evaluate(self) -> dict[str, Any]:
        record = {
            "step": self.step,
            "train_loss": self.estimate_loss(self.splits.train),
            "val_loss": self.estimate_loss(self.splits.val),
        }
        self._last_val = record["val_loss"]
        self._log(record)
        return record

    def sample(self) -> str:
        text = generate_preview(
            self.model,
            self.tokenizer,
            self.config.sample_prompt,
            self.config.sample_tokens,
            seed=self.config.seed + self.step,
        )
        self.samples.append(text)
        return text

    # ----- logging -----------------------------------------------------------------------------
    def _log(self, record: dict[str, Any]) -> None:
        """Keep `record` in the history (saved with each checkpoint) and append it to the log."""
        self.history.append(record)
        if self.run_dir is not None and self.dist.is_main:
            append_record(self.run_dir, record)

    def _rewrite_log(self) -> None:
        """After a resume, the log holds exactly the records up to the checkpoint's step."""
        if self.run_dir is not None and self.dist.is_main:
            rewrite_log(self.run_dir, self.history)

    # ----- the loop ----------------------------------------------------------------------------
    def train(self, until: int | None = None) -> TrainResult:
        """Run from the current step to max_steps (or stop after step `until`, as an interrupted
        run would); returns what was measured."""
        cfg = self.config
        last_step = cfg.max_steps if until is None else min(until, cfg.max_steps)
        tokens_per_step = cfg.tokens_per_step
        started = time.perf_counter()
        window_start, window_steps = started, 0
        first_step = self.step
        stop_reason = "max_steps" if until is None or until >= cfg.max_steps else "until"
        bar = progress() if self.show_progress else None
        task = bar.add_task("training", total=cfg.max_steps, completed=self.step) if bar else None
        with bar if bar is not None else contextlib.nullcontext():
            while self.step < last_step:
                loss = self.train_step()
                window_steps += 1
                if not math.isfinite(loss):
                    self._stop_on_bad_loss(loss)
                if self.step % max(cfg.log_interval, 1) == 0 or self.step == cfg.max_steps:
                    now = time.perf_counter()
                    tps = tokens_per_step * window_steps / max(now - window_start, 1e-9)
                    window_start, window_steps = now, 0
                    moe, lr = self.last_moe_stats, self._last_lr
                    elapsed = now - started
                    self._log(
                        step_record(self.step, loss, lr, self._last_grad_norm, tps, elapsed, moe)
                    )
                    if bar is not None:
                        bar.update(task, description=progress_line(loss, lr, tps, moe))
                if bar is not None:
                    bar.update(task, completed=self.step)
                out_of_time = cfg.max_minutes > 0 and (
                    time.perf_counter() - started >= 60 * cfg.max_minutes
                )
                if self.dist.enabled:  # every process must stop at the same step
                    out_of_time = float(self.dist.mean(torch.tensor(float(out_of_time)))) > 0
                self._periodic(self.step == cfg.max_steps or out_of_time)
                if out_of_time and self.step < last_step:
                    stop_reason = "time_limit"
                    break
        elapsed = time.perf_counter() - started
        steps_run = self.step - first_step
        return TrainResult(
            steps=self.step,
            final_loss=self.step_losses[-1] if self.step_losses else float("nan"),
            final_val_loss=self._last_val,
            elapsed_s=elapsed,
            tokens_per_s=tokens_per_step * steps_run / max(elapsed, 1e-9),
            step_losses=list(self.step_losses),
            history=list(self.history),
            samples=list(self.samples),
            stop_reason=stop_reason,
            max_steps=cfg.max_steps,
        )

    def _stop_on_bad_loss(self, loss: float) -> None:
        saved = self.run_dir / "latest" if self.run_dir is not None else None
        kept = (
            f"the last good checkpoint, {saved.read_text().strip()}, is kept in {self.run_dir}"
            if saved is not None and saved.exists()
            else "no checkpoint was written yet"
        )
        raise LossNotFinite(
            f"loss became {loss} at step {self.step + 1}; training stopped before applying that "
            f"step and {kept}",
            hint="resume with --resume RUN and a smaller --lr or --grad-clip, or --dtype float32",
        )

    def _periodic(self, final: bool) -> None:
        cfg = self.config
        if (cfg.eval_interval and self.step % cfg.eval_interval == 0) or final:
            record = self.evaluate()
            if self.dist.is_main:
                self.console.print(
                    f"step {self.step:>6}: train loss {record['train_loss']:.4f}, "
                    f"val loss {record['val_loss']:.4f}"
                )
        if cfg.sample_interval and (self.step % cfg.sample_interval == 0 or final):
            text = self.sample()
            if self.dist.is_main and self.show_progress:
                self.console.rule(f"sample at step {self.step}")
                self.console.print(text, markup=False, highlight=False)
                self.console.rule()
        if (cfg.checkpoint_interval and self.step % cfg.checkpoint_interval == 0) or final:
            self.save_checkpoint()
