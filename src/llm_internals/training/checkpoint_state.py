"""The run bookkeeping in trainer_state.json, checked field by field before a resume uses it.

RNG states are stored as base64 text (a torch generator's state is a uint8 tensor); the data
position is the number of batches drawn; the log keeps its records so a resumed run's log.jsonl
is exactly the uninterrupted run's. `generator_state` captures the generators and the data
position for a save, `restore_generators` puts them back on resume. A damaged file fails here
with the file and field named, instead of as a TypeError deep inside the trainer.
"""

from __future__ import annotations

import base64
import binascii
import math
from typing import Any

import torch

from llm_internals.errors import LLMInternalsError
from llm_internals.training.data import BatchSampler

CPU_RNG_BYTES = torch.get_rng_state().numel()


def encode_rng(state: torch.Tensor) -> str:
    """A generator state (uint8 tensor) as base64 text for JSON."""
    return base64.b64encode(state.cpu().numpy().tobytes()).decode("ascii")


def decode_rng(text: str, source: str = "RNG state", size: int | None = None) -> torch.Tensor:
    """Inverse of `encode_rng`; malformed text or a wrong length is an error naming `source`."""
    try:
        data = base64.b64decode(text, validate=True) if isinstance(text, str) else None
    except (binascii.Error, ValueError):
        data = None
    if data is None or not data or (size is not None and len(data) != size):
        raise LLMInternalsError(f"{source} is not a saved generator state")
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).clone()


def generator_state(batches: BatchSampler, device: torch.device) -> dict[str, Any]:
    """The "rng" and "data" fields of trainer_state.json: the batch sampler's generator and how
    many batches it drew, torch's CPU generator, and on CUDA the device's (dropout on the GPU
    draws from it), encoded for JSON."""
    rng = {
        "batches": encode_rng(batches.generator.get_state()),
        "torch": encode_rng(torch.get_rng_state()),
    }
    if device.type == "cuda":
        rng["cuda"] = encode_rng(torch.cuda.get_rng_state(device))
    return {"rng": rng, "data": {"batches_drawn": batches.batches_drawn}}


def restore_generators(state: dict[str, Any], batches: BatchSampler, device: torch.device) -> None:
    """Put back what `generator_state` saved, from a state `check_state` returned (decoded), so
    a resumed run draws the same batches and dropout masks as the uninterrupted run."""
    batches.load_state_dict(
        {"generator": state["rng"]["batches"], "batches_drawn": state["data"]["batches_drawn"]}
    )
    torch.set_rng_state(state["rng"]["torch"])
    if "cuda" in state["rng"] and device.type == "cuda":
        torch.cuda.set_rng_state(state["rng"]["cuda"], device)


def _int(value: Any, source: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise LLMInternalsError(f"{source} must be an integer >= 0, got {value!r}")
    return value


def check_state(meta: dict[str, Any], source: str) -> dict[str, Any]:
    """The bookkeeping of a trainer_state.json dict, validated, with RNG states decoded."""
    step = _int(meta.get("step"), f"{source}: field 'step'")
    rng, data = meta.get("rng"), meta.get("data")
    if not isinstance(rng, dict):
        raise LLMInternalsError(f"{source}: field 'rng' must be an object")
    if not isinstance(data, dict):
        raise LLMInternalsError(f"{source}: field 'data' must be an object")
    decoded = {
        key: decode_rng(rng.get(key), f"{source}: field 'rng.{key}'", CPU_RNG_BYTES)
        for key in ("batches", "torch")
    }
    if "cuda" in rng:
        decoded["cuda"] = decode_rng(rng["cuda"], f"{source}: field 'rng.cuda'")
    losses = meta.get("step_losses", [])
    if not isinstance(losses, list) or not all(
        isinstance(x, (int, float)) and not isinstance(x, bool) for x in losses
    ):
        raise LLMInternalsError(f"{source}: field 'step_losses' must be a list of numbers")
    history = meta.get("history", [])
    if not isinstance(history, list) or not all(
        isinstance(r, dict) and isinstance(r.get("step"), int) for r in history
    ):
        raise LLMInternalsError(
            f"{source}: field 'history' must be a list of records with an integer 'step'"
        )
    if any(not math.isfinite(x) for x in losses):
        raise LLMInternalsError(f"{source}: field 'step_losses' holds a non-finite loss")
    return {
        **{k: v for k, v in meta.items() if k not in ("format", "format_version", "optimizer")},
        "step": step,
        "rng": decoded,
        "data": {
            "batches_drawn": _int(data.get("batches_drawn"), f"{source}: 'data.batches_drawn'")
        },
        "step_losses": [float(x) for x in losses],
        "history": history,
    }
