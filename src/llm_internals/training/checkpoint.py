"""Training checkpoints: everything needed to continue a run exactly where it stopped.

A checkpoint is a directory `step-00000100/` under the run's folder holding

    config.json, model.safetensors   the model (models/checkpoint.py's format: loadable alone)
    optimizer.safetensors            every optimizer state tensor (moments, momentum buffers)
    tokenizer.json                   the tokenizer the token ids mean
    trainer_state.json               train config, step, RNG states, data position, and the
                                     optimizer state's structure with hyperparameters

No pickles anywhere: the optimizer's nested state dict is split into its tensors (safetensors,
named by their path such as "adamw/state/3/exp_avg") and a JSON skeleton in which each tensor is
replaced by {"tensor": name}. The directory is written under a temporary name and renamed into
place, and `latest` (a one-line file) is rewritten atomically last, so a crash mid-save leaves
the previous checkpoint as the one a resume finds.
"""

from __future__ import annotations

import base64
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from llm_internals.errors import LLMInternalsError
from llm_internals.files import atomic_write, atomic_write_text, read_json, write_json
from llm_internals.models.checkpoint import load_checkpoint, save_checkpoint
from llm_internals.models.loading import LATEST_FILE
from llm_internals.training.config import TrainConfig

STATE_FORMAT = "llm-internals-train-state"
STATE_VERSION = 1
STATE_FILE = "trainer_state.json"
OPTIMIZER_FILE = "optimizer.safetensors"
TOKENIZER_FILE = "tokenizer.json"

KEEP_CHECKPOINTS = 2


# ----- nested state <-> (JSON skeleton, tensors) ---------------------------------------------
def flatten_state(obj: Any, tensors: dict[str, torch.Tensor], path: str = "") -> Any:
    """JSON-able skeleton of `obj`; its tensors go to `tensors` under their path names.

    Dicts become {"items": [[key, value], ...]} so integer keys (optimizer param ids) survive,
    tuples become {"tuple": [...]} (torch compares betas as tuples).
    """
    if isinstance(obj, torch.Tensor):
        tensors[path] = obj.detach().contiguous().cpu()
        return {"tensor": path}
    if isinstance(obj, dict):
        return {"items": [[k, flatten_state(v, tensors, f"{path}/{k}")] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"tuple": [flatten_state(v, tensors, f"{path}/{i}") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [flatten_state(v, tensors, f"{path}/{i}") for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise LLMInternalsError(f"cannot store {type(obj).__name__} at {path!r} of an optimizer state")


def unflatten_state(skeleton: Any, tensors: dict[str, torch.Tensor], source: str) -> Any:
    """Inverse of `flatten_state`."""
    if isinstance(skeleton, dict):
        if "tensor" in skeleton:
            name = skeleton["tensor"]
            if name not in tensors:
                raise LLMInternalsError(f"{source}: tensor {name!r} is missing")
            return tensors[name]
        if "items" in skeleton:
            return {k: unflatten_state(v, tensors, source) for k, v in skeleton["items"]}
        if "tuple" in skeleton:
            return tuple(unflatten_state(v, tensors, source) for v in skeleton["tuple"])
        raise LLMInternalsError(f"{source}: unreadable optimizer state entry {skeleton!r}")
    if isinstance(skeleton, list):
        return [unflatten_state(v, tensors, source) for v in skeleton]
    return skeleton


def encode_rng(state: torch.Tensor) -> str:
    """A generator state (uint8 tensor) as base64 text for JSON."""
    return base64.b64encode(state.numpy().tobytes()).decode("ascii")


def decode_rng(text: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(text)), dtype=torch.uint8).clone()


# ----- save / load ---------------------------------------------------------------------------
@dataclass
class TrainingCheckpoint:
    """What `load_training_checkpoint` returns; the trainer puts each part back in place."""

    directory: Path
    model: torch.nn.Module
    optimizer_state: dict[str, Any]
    config: TrainConfig
    step: int
    state: dict[str, Any]  # rng states, data positions, log bookkeeping


def save_training_checkpoint(
    run_dir: str | Path,
    step: int,
    model: torch.nn.Module,
    optimizer: Any,
    config: TrainConfig,
    tokenizer: Any,
    state: dict[str, Any],
) -> Path:
    """Write `run_dir/step-<step>/`, point `run_dir/latest` at it, prune old checkpoints."""
    run_dir = Path(run_dir)
    final = run_dir / f"step-{step:08d}"
    staging = run_dir / f".step-{step:08d}.tmp-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        save_checkpoint(model, staging)
        tensors: dict[str, torch.Tensor] = {}
        skeleton = flatten_state(optimizer.state_dict(), tensors, "optimizer")
        atomic_write(staging / OPTIMIZER_FILE, lambda tmp: save_file(tensors, str(tmp)))
        tokenizer.save(staging / TOKENIZER_FILE)
        write_json(
            staging / STATE_FILE,
            {
                "format": STATE_FORMAT,
                "format_version": STATE_VERSION,
                "step": step,
                "train_config": config.to_dict(),
                "optimizer": skeleton,
                "optimizer_class": type(optimizer).__name__,
                **state,
            },
        )
        if final.exists():
            shutil.rmtree(final)
        os.replace(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    atomic_write_text(run_dir / LATEST_FILE, final.name + "\n")
    for old in sorted(run_dir.glob("step-*"))[:-KEEP_CHECKPOINTS]:
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    return final


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint directory itself, or a run folder whose `latest` names one."""
    path = Path(path)
    if (path / STATE_FILE).exists():
        return path
    latest = path / LATEST_FILE
    if latest.exists():
        target = path / latest.read_text().strip()
        if not (target / STATE_FILE).exists():
            raise LLMInternalsError(f"{latest} names {target.name}, which has no {STATE_FILE}")
        return target
    if not path.exists():
        raise LLMInternalsError(f"checkpoint {path} does not exist")
    raise LLMInternalsError(
        f"{path} is neither a checkpoint (no {STATE_FILE}) nor a run folder (no {LATEST_FILE})",
        hint="pass the run's out_dir or one of its step-* folders",
    )


def load_training_checkpoint(path: str | Path) -> TrainingCheckpoint:
    """Read a checkpoint written by `save_training_checkpoint`; every problem names its file."""
    directory = resolve_checkpoint(path)
    meta = read_json(directory / STATE_FILE)
    source = str(directory / STATE_FILE)
    if meta.get("format") != STATE_FORMAT:
        raise LLMInternalsError(f"{source}: field 'format' is not {STATE_FORMAT!r}")
    if meta.get("format_version") != STATE_VERSION:
        raise LLMInternalsError(
            f"{source}: format_version {meta.get('format_version')!r} is not supported "
            f"(this version reads {STATE_VERSION})"
        )
    for key in ("step", "train_config", "optimizer"):
        if key not in meta:
            raise LLMInternalsError(f"{source}: field {key!r} is missing")
    config = TrainConfig.from_dict(meta["train_config"], source=f"{source}: train_config")
    model = load_checkpoint(directory)
    optimizer_path = directory / OPTIMIZER_FILE
    if not optimizer_path.exists():
        raise LLMInternalsError(f"{optimizer_path} does not exist")
    try:
        tensors = load_file(str(optimizer_path))
    except (SafetensorError, OSError) as err:
        raise LLMInternalsError(
            f"{optimizer_path}: not a readable safetensors file ({err})"
        ) from None
    optimizer_state = unflatten_state(meta["optimizer"], tensors, str(optimizer_path))
    state = {k: v for k, v in meta.items() if k not in ("format", "format_version", "optimizer")}
    return TrainingCheckpoint(directory, model, optimizer_state, config, int(meta["step"]), state)
