"""Fine-tuning a trained model with LoRA or QLoRA on the trainer's own loop.

The Trainer (training/trainer.py) does the steps, schedule, clipping, evaluation, progress bar and
JSONL log; it already optimises only parameters that require gradients, so after
`prepare_model` (base frozen, adapters injected; QLoRA: the base's block linears in NF4 first)
the same loop trains the adapters alone. What differs is the checkpoint: a step folder holds the
adapter as a PEFT folder plus its optimizer state, never the (unchanged) base weights:

    OUT/step-00000100/adapter_config.json, adapter_model.safetensors   the adapter (PEFT files)
    OUT/step-00000100/training.safetensors   adapter tensors + AdamW state (module_checkpoint)
    OUT/step-00000100/finetune_state.json    base path, method, RNG states, data position, log
    OUT/latest                               names the newest step folder
    OUT/adapter/                             the final adapter (what `generate --adapter` takes)

Folders are written under a staging name and renamed, so a crash never leaves half a checkpoint;
`resume_finetune` continues exactly where the run stopped (same batches, same RNG).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from llm_internals.adapters import LoraSettings, inject_lora, save_adapter
from llm_internals.adapters.qlora import quantize_base_nf4
from llm_internals.errors import LLMInternalsError
from llm_internals.files import read_json, read_text, write_json
from llm_internals.models.loading import LATEST_FILE
from llm_internals.training.checkpoint import publish_step_folder
from llm_internals.training.checkpoint_state import check_state, encode_rng
from llm_internals.training.config import TrainConfig
from llm_internals.training.data import TokenSplits
from llm_internals.training.module_checkpoint import load_checkpoint, save_checkpoint
from llm_internals.training.trainer import Trainer

METHODS = ("lora", "qlora", "full")
STATE_FILE = "finetune_state.json"
TRAINING_FILE = "training.safetensors"
ADAPTER_DIR = "adapter"


@dataclass(frozen=True)
class FinetuneSpec:
    """What is trained: "lora" (adapters on a frozen fp32 base), "qlora" (adapters on an NF4
    base, double-quantised scales unless double_quant is False) or "full" (every weight)."""

    method: str = "lora"
    lora: LoraSettings = field(default_factory=LoraSettings)
    targets: str = "q,k,v,o"
    double_quant: bool = True

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise LLMInternalsError(f"fine-tuning method {self.method!r} is not one of {METHODS}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str) -> FinetuneSpec:
        try:
            return cls(**{**data, "lora": LoraSettings(**data["lora"])})
        except (KeyError, TypeError) as err:
            raise LLMInternalsError(f"{source}: field 'spec' is damaged ({err})") from None


def prepare_model(model: nn.Module, spec: FinetuneSpec) -> nn.Module:
    """Make `model` trainable as `spec` says (in place); returns it in train mode."""
    if spec.method == "full":
        for param in model.parameters():
            param.requires_grad_(True)
    else:
        if spec.method == "qlora":
            quantize_base_nf4(model, double_quant=spec.double_quant)
        inject_lora(model, spec.lora, spec.targets)
    return model.train()


class _Trainable(nn.Module):
    """A view of a model's trainable parameters (the same Parameter objects), so
    module_checkpoint saves and restores just the adapters with their optimizer state."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.params = nn.ParameterList([p for p in model.parameters() if p.requires_grad])


class FinetuneTrainer(Trainer):
    """The Trainer, checkpointing the adapter (PEFT folder) and its optimizer state only."""

    def __init__(
        self,
        config: TrainConfig,
        model: nn.Module,
        tokenizer: Any,
        splits: TokenSplits,
        spec: FinetuneSpec,
        base_path: str,
        **kwargs: Any,
    ) -> None:
        super().__init__(config, model, tokenizer, splits, **kwargs)
        self.spec, self.base_path = spec, base_path

    def save_checkpoint(self) -> Path | None:
        if self.run_dir is None or not self.dist.is_main or self.spec.method == "full":
            return None

        def write(staging: Path) -> None:
            save_adapter(self.model, staging, base_model_name_or_path=self.base_path)
            save_checkpoint(_Trainable(self.model), self.optimizer, self.step,
                            staging / TRAINING_FILE)  # fmt: skip
            write_json(staging / STATE_FILE, self._state())

        final = publish_step_folder(self.run_dir, self.step, write, self.config.keep_checkpoints)
        if self.step == self.config.max_steps:
            save_adapter(
                self.model, self.run_dir / ADAPTER_DIR, base_model_name_or_path=self.base_path
            )
        return final

    def _state(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "base_model": self.base_path,
            "spec": self.spec.to_dict(),
            "train_config": self.config.to_dict(),
            "rng": {
                "batches": encode_rng(self.batches.generator.get_state()),
                "torch": encode_rng(torch.get_rng_state()),
            },
            "data": {"batches_drawn": self.batches.batches_drawn},
            "step_losses": self.step_losses,
            "history": self.history,
        }

    def restore(self, step_dir: Path) -> None:
        """Continue from `step_dir`: adapter weights, optimizer, RNG, data position and log."""
        state = check_state(read_json(step_dir / STATE_FILE), str(step_dir / STATE_FILE))
        self.step = load_checkpoint(
            _Trainable(self.model), self.optimizer, step_dir / TRAINING_FILE
        )
        self.batches.load_state_dict(
            {"generator": state["rng"]["batches"], "batches_drawn": state["data"]["batches_drawn"]}
        )
        torch.set_rng_state(state["rng"]["torch"])
        self.step_losses = list(state["step_losses"])
        self.history = [r for r in state["history"] if r["step"] <= self.step]
        self._rewrite_log()


def latest_step(run_dir: str | Path) -> Path:
    """The step folder a fine-tuning run's `latest` file names (or `run_dir` if it is one)."""
    run_dir = Path(run_dir)
    if (run_dir / STATE_FILE).is_file():
        return run_dir
    latest = run_dir / LATEST_FILE
    if not latest.is_file():
        raise LLMInternalsError(
            f"{run_dir} holds no fine-tuning checkpoint (no {LATEST_FILE} file)",
            hint="--resume continues a folder written by `llm-internals finetune --out DIR`",
        )
    step_dir = run_dir / read_text(latest, "latest file", max_bytes=1024).strip()
    if not (step_dir / STATE_FILE).is_file():
        raise LLMInternalsError(
            f"{latest} names {step_dir.name}, which has no {STATE_FILE}",
            hint="the run folder is damaged; pass one of its step-* folders to --resume",
        )
    return step_dir
