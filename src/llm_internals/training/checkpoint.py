"""Training checkpoints: everything needed to continue a run exactly where it stopped.

A checkpoint is a directory `step-00000100/` under the run's folder holding

    config.json, model.safetensors   the model (models/checkpoint.py's format: loadable alone)
    optimizer.safetensors            every optimizer state tensor (moments, momentum buffers)
    tokenizer.json                   the tokenizer the token ids mean
    trainer_state.json               train config, step, RNG states, data position, the
                                     optimizer state's structure with hyperparameters, and a
                                     SHA-256 of every other file in the folder ("checksums")

No pickles anywhere: the optimizer's nested state dict is split into its tensors (safetensors,
named by their path such as "adamw/state/3/exp_avg") and a JSON skeleton in which each tensor is
replaced by {"tensor": name} (module_checkpoint.py). The directory is written under a temporary
name `.step-00000100.tmp-<pid>` and renamed into place, and `latest` (a one-line file) is
rewritten atomically last, so a crash mid-save leaves the previous checkpoint as the one a resume
finds; a staging folder a crash left behind is removed when the next run starts.

Loading a run folder tries `latest` first; a checkpoint that fails to load (a checksum that does
not match, a damaged trainer_state.json, a missing file) is reported as a warning and the next
older step-* folder is tried. Only `keep` checkpoints are kept (the newest; 0 keeps all).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from llm_internals.errors import LLMInternalsError
from llm_internals.files import atomic_write, atomic_write_text, read_json, read_text, write_json
from llm_internals.models.checkpoint import (
    INDEX_FILE,
    file_sha256,
    load_checkpoint,
    save_checkpoint,
    weight_files,
)
from llm_internals.models.loading import LATEST_FILE, STEP_NAME
from llm_internals.training.checkpoint_state import check_state, decode_rng, encode_rng
from llm_internals.training.config import KEEP_CHECKPOINTS, TrainConfig
from llm_internals.training.module_checkpoint import flatten_state, unflatten_state

__all__ = [
    "KEEP_CHECKPOINTS",
    "TrainingCheckpoint",
    "decode_rng",
    "file_sha256",
    "encode_rng",
    "flatten_state",
    "load_training_checkpoint",
    "remove_orphaned_staging",
    "run_folder_of",
    "save_training_checkpoint",
    "unflatten_state",
]

STATE_FORMAT = "llm-internals-train-state"
STATE_VERSION = 2  # 2 added "checksums"; version 1 folders still load (without the check)
STATE_FILE = "trainer_state.json"
OPTIMIZER_FILE = "optimizer.safetensors"
TOKENIZER_FILE = "tokenizer.json"
# The state holds every step's loss and every log record: ~30 bytes per step, more with
# log_interval 1; 256 MiB covers millions of steps and still refuses a runaway file at once.
MAX_STATE_BYTES = 256 * 1024 * 1024
STAGING_GLOB = ".step-*.tmp-*"

Warn = Callable[[str], None]


# ----- save ----------------------------------------------------------------------------------
@dataclass
class TrainingCheckpoint:
    """What `load_training_checkpoint` returns; the trainer puts each part back in place."""

    directory: Path
    model: torch.nn.Module
    optimizer_state: dict[str, Any]
    config: TrainConfig
    step: int
    state: dict[str, Any]  # rng states (decoded to tensors), data positions, log bookkeeping


def save_training_checkpoint(
    run_dir: str | Path,
    step: int,
    model: torch.nn.Module,
    optimizer: Any,
    config: TrainConfig,
    tokenizer: Any,
    state: dict[str, Any],
    keep: int = KEEP_CHECKPOINTS,
) -> Path:
    """Write `run_dir/step-<step>/`, point `run_dir/latest` at it, keep the newest `keep`."""

    def write(staging: Path) -> None:
        save_checkpoint(model, staging)
        tensors: dict[str, torch.Tensor] = {}
        skeleton = flatten_state(optimizer.state_dict(), tensors, "optimizer")
        atomic_write(staging / OPTIMIZER_FILE, lambda tmp: save_file(tensors, str(tmp)))
        tokenizer.save(staging / TOKENIZER_FILE)
        checksums = {p.name: file_sha256(p) for p in sorted(staging.iterdir()) if p.is_file()}
        write_json(
            staging / STATE_FILE,
            {
                "format": STATE_FORMAT,
                "format_version": STATE_VERSION,
                "step": step,
                "train_config": config.to_dict(),
                "optimizer": skeleton,
                "optimizer_class": type(optimizer).__name__,
                "checksums": checksums,
                **state,
            },
        )

    return publish_step_folder(Path(run_dir), step, write, keep)


def publish_step_folder(run_dir: Path, step: int, write: Callable[[Path], None], keep: int) -> Path:
    """Fill a hidden staging folder with `write(staging)`, rename it to `run_dir/step-<step>/`,
    point `run_dir/latest` at it, and delete all but the newest `keep` step folders (0: keep all).

    A crash mid-write leaves only the staging folder (removed here on error, or by
    remove_orphaned_staging later), never a half-written step folder."""
    final = run_dir / f"step-{step:08d}"
    staging = run_dir / f".step-{step:08d}.tmp-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        write(staging)
        if final.exists():
            shutil.rmtree(final)
        os.replace(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    atomic_write_text(run_dir / LATEST_FILE, final.name + "\n")
    if keep > 0:
        for old in step_folders(run_dir)[:-keep]:
            if old != final:
                shutil.rmtree(old, ignore_errors=True)
    return final


def step_folders(run_dir: Path) -> list[Path]:
    """The run's step-NNNNNNNN folders, oldest first."""
    return sorted(p for p in run_dir.glob("step-*") if STEP_NAME.fullmatch(p.name) and p.is_dir())


def remove_orphaned_staging(run_dir: str | Path) -> list[Path]:
    """Delete `.step-*.tmp-*` folders a crashed save left in `run_dir`; return what was removed."""
    removed = sorted(Path(run_dir).glob(STAGING_GLOB))
    for path in removed:
        shutil.rmtree(path, ignore_errors=True)
    return removed


# ----- find ----------------------------------------------------------------------------------
def _candidates(path: Path) -> tuple[list[Path], list[str]]:
    """(checkpoint folders to try for `path`, best first; problems found on the way). A step
    folder is its own single candidate; a run folder offers `latest`, then every step-* folder
    from the newest."""
    if (path / STATE_FILE).exists():
        return [path], []
    found: list[Path] = []
    problems: list[str] = []
    latest = path / LATEST_FILE
    if latest.is_file():
        try:
            name = read_text(latest, "latest file", max_bytes=1024).strip()
        except LLMInternalsError as err:
            name = err.message
        if STEP_NAME.fullmatch(name):
            found.append(path / name)
        else:  # never follow a path out of the run folder
            problems.append(f"{latest} names {name[:80]!r}, not a step-NNNNNNNN folder")
    found += [p for p in reversed(step_folders(path)) if p not in found]
    if found:
        return found, problems
    if not path.exists():
        raise LLMInternalsError(f"checkpoint {path} does not exist")
    raise LLMInternalsError(
        f"{path} is neither a checkpoint (no {STATE_FILE}) nor a run folder (no {LATEST_FILE})",
        hint="pass the run's out_dir or one of its step-* folders to --resume",
    )


def run_folder_of(checkpoint_dir: Path) -> Path:
    """The run folder holding a step-* checkpoint: a resume writes its log and new checkpoints
    there (and nowhere else, whatever out_dir the saved config names)."""
    run_dir = checkpoint_dir.parent
    if not (STEP_NAME.fullmatch(checkpoint_dir.name) and (run_dir / LATEST_FILE).is_file()):
        raise LLMInternalsError(
            f"{checkpoint_dir} is not a step-* folder inside a run folder, so a resume has "
            "nowhere safe to write",
            hint=f"copy it into an empty folder with a '{LATEST_FILE}' file naming it, and pass "
            "that folder to --resume",
        )
    return run_dir


# ----- load ----------------------------------------------------------------------------------
def load_training_checkpoint(path: str | Path, warn: Warn | None = None) -> TrainingCheckpoint:
    """Read a checkpoint written by `save_training_checkpoint`; every problem names its file.

    For a run folder, a damaged newest checkpoint is reported through `warn` and the one
    before it is loaded instead; an explicitly named step folder must load itself.
    """
    path = Path(path)
    candidates, errors = _candidates(path)
    if candidates == [path]:  # named explicitly: it must load itself
        return _load_one(path)
    for directory in candidates:
        try:
            checkpoint = _load_one(directory)
        except LLMInternalsError as err:
            errors.append(f"{directory.name}: {err.message}")
            continue
        if errors and warn is not None:
            warn(
                f"warning: {'; '.join(errors)}. Resuming from the intact {directory.name} "
                f"(step {checkpoint.step}) instead."
            )
        return checkpoint
    raise LLMInternalsError(f"{path}: no intact checkpoint ({'; '.join(errors)})")


def _load_one(directory: Path) -> TrainingCheckpoint:
    state_path = directory / STATE_FILE
    if not state_path.exists():
        raise LLMInternalsError(f"{directory} has no {STATE_FILE}")
    meta = read_json(state_path, "trainer state file", max_bytes=MAX_STATE_BYTES)
    source = str(state_path)
    if meta.get("format") != STATE_FORMAT:
        raise LLMInternalsError(f"{source}: field 'format' is not {STATE_FORMAT!r}")
    version = meta.get("format_version")
    if version not in (1, STATE_VERSION):
        raise LLMInternalsError(
            f"{source}: format_version {version!r} is not supported "
            f"(this version reads 1 and {STATE_VERSION})"
        )
    for key in ("step", "train_config", "optimizer"):
        if key not in meta:
            raise LLMInternalsError(f"{source}: field {key!r} is missing")
    if version == STATE_VERSION:
        verify_checksums(directory, meta.get("checksums"), source)
    state = check_state(meta, source)
    if not isinstance(meta["train_config"], dict):
        raise LLMInternalsError(f"{source}: field 'train_config' must be an object")
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
    if not isinstance(optimizer_state, dict):
        raise LLMInternalsError(f"{source}: field 'optimizer' is not an optimizer state")
    return TrainingCheckpoint(directory, model, optimizer_state, config, state["step"], state)


def verify_checksums(directory: Path, checksums: Any, source: str) -> None:
    """Every file a resume reads is listed, and every listed file's SHA-256 matches."""
    if not isinstance(checksums, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and Path(k).name == k
        for k, v in checksums.items()
    ):
        raise LLMInternalsError(f"{source}: field 'checksums' must map file names to SHA-256s")
    read = {"config.json", OPTIMIZER_FILE, TOKENIZER_FILE, *weight_files(directory)}
    if (directory / INDEX_FILE).exists():
        read.add(INDEX_FILE)
    unlisted = sorted(read - set(checksums))
    if unlisted:
        raise LLMInternalsError(f"{source}: file(s) {', '.join(unlisted)} have no checksum")
    for name, expected in sorted(checksums.items()):
        if not (directory / name).is_file():
            raise LLMInternalsError(f"{directory / name} is missing (listed in {source})")
        if file_sha256(directory / name) != expected:
            raise LLMInternalsError(
                f"{directory / name}: SHA-256 does not match the one in {STATE_FILE} "
                "(the file was damaged after it was written)"
            )
