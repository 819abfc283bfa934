"""From a base model folder and a text to a fine-tuned adapter (and optionally a merged model).

Used by `llm-internals finetune` and benchmarks/lora.py. The base is loaded with the one loader
(models/loading.py: our checkpoints, HF folders, run folders), its tokenizer encodes the data
(cached token files under OUT/data), and FinetuneTrainer runs the trainer's loop.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from llm_internals.adapters import load_adapter, merge_and_unload, training_bytes
from llm_internals.console import console as default_console
from llm_internals.errors import LLMInternalsError
from llm_internals.files import read_json
from llm_internals.models.checkpoint import save_checkpoint as save_model
from llm_internals.models.hf import save_pretrained
from llm_internals.models.hf_decoder_config import export_family
from llm_internals.models.loading import load_model_and_tokenizer
from llm_internals.training.config import TrainConfig
from llm_internals.training.finetune import (
    ADAPTER_DIR,
    STATE_FILE,
    FinetuneSpec,
    FinetuneTrainer,
    latest_step,
    prepare_model,
)
from llm_internals.training.run import prepare_data
from llm_internals.training.trainer import TrainResult


def run_finetune(
    base: str | Path,
    spec: FinetuneSpec,
    config: TrainConfig,
    *,
    resume: bool = False,
    until: int | None = None,
    console: Console | None = None,
    show_progress: bool = True,
    device: str | torch.device = "cpu",
) -> TrainResult:
    """Fine-tune `base` on config.corpus (a corpus name or a text file) into config.out_dir.

    resume=True continues the run in config.out_dir from its newest checkpoint with the saved
    base, method and settings (only max_steps may change). `until` stops after that step, as
    an interrupted run would.
    """
    console = console or default_console
    step_dir = None
    if resume:
        step_dir = latest_step(config.out_dir)
        state = read_json(step_dir / STATE_FILE, "fine-tuning state file")
        base = state.get("base_model", base)
        spec = FinetuneSpec.from_dict(state.get("spec", {}), str(step_dir / STATE_FILE))
        saved = TrainConfig.from_dict(state.get("train_config", {}), str(step_dir / STATE_FILE))
        config = saved.replace(max_steps=config.max_steps, out_dir=config.out_dir)
    if config.threads:
        torch.set_num_threads(config.threads)
    model, tokenizer, _ = load_model_and_tokenizer(base)
    if config.block_size > model.config.max_seq_len:
        raise LLMInternalsError(
            f"block size {config.block_size} is longer than the model's context "
            f"({model.config.max_seq_len} tokens)",
            hint=f"pass --block-size {model.config.max_seq_len} or less",
        )
    torch.manual_seed(config.seed)
    prepare_model(model, spec)
    tokenizer, splits = prepare_data(config, tokenizer)
    trainer = FinetuneTrainer(config, model, tokenizer, splits, spec, str(base),
                              run_dir=config.out_dir, console=console,
                              show_progress=show_progress, device=device)  # fmt: skip
    if step_dir is not None:
        trainer.restore(step_dir)
        console.print(f"Resuming {step_dir} at step {trainer.step}.")
    else:  # the base's own losses: what fine-tuning starts from (history's step-0 record)
        record = trainer.evaluate()
        console.print(f"base model: train loss {record['train_loss']:.4f}, "
                      f"val loss {record['val_loss']:.4f}")  # fmt: skip
    counted = training_bytes(model)
    console.print(
        f"{spec.method}: {counted.trainable_params:,} of {counted.total_params:,} parameters "
        f"trainable; weights {counted.weights / 2**20:.2f} MiB, gradients + Adam "
        f"{(counted.gradients + counted.adam_states) / 2**20:.2f} MiB; "
        f"{len(splits.train):,} train / {len(splits.val):,} val tokens."
    )
    return trainer.train(until=until)


def merge_run(run_dir: str | Path, out: str | Path, console: Console | None = None) -> list[Path]:
    """Fold the run's final adapter into a fresh full-precision copy of its base (a QLoRA
    adapter too: merging into NF4 would round the update away) and write it in our format to
    OUT/merged and, where the model has an HF form, in HF's to OUT/merged-hf."""
    console = console or default_console
    run_dir, out = Path(run_dir), Path(out)
    state: dict[str, Any] = read_json(latest_step(run_dir) / STATE_FILE, "fine-tuning state")
    model, tokenizer, _ = load_model_and_tokenizer(state["base_model"])
    load_adapter(model, run_dir / ADAPTER_DIR)
    model = merge_and_unload(model)
    written = [out / "merged"]
    save_model(model, written[0])
    tokenizer.save(written[0] / "tokenizer.json")
    if _exports_as_hf(model):
        written.append(out / "merged-hf")
        save_pretrained(model, written[1], tokenizer=tokenizer)
    for path in written:
        console.print(f"Wrote the merged model to {path}")
    return written


def _exports_as_hf(model: torch.nn.Module) -> bool:
    try:
        export_family(model.config)
    except LLMInternalsError:
        return False
    return True
