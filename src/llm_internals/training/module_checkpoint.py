"""Save and restore any nn.Module with its torch optimizer: one safetensors file, no pickle.

    save_checkpoint(model, optimizer, step, "ckpt.safetensors")   # or an open binary file
    step = load_checkpoint(model, optimizer, "ckpt.safetensors")  # into existing objects

This is the small, general tool a training script of any shape needs (the API courses such as
Stanford's CS336 ask for). It differs from two neighbours:
- `llm_internals.models.save_checkpoint(model, folder)` writes one of *our* models as a folder
  (config.json + model.safetensors) that `load_checkpoint(folder)` rebuilds from nothing;
- `training/checkpoint.py` writes a whole run's step-* folder (model folder, optimizer,
  tokenizer, RNG states, data position) for `train --resume`.

File layout: a safetensors file whose tensors are the model's state dict under "model/<name>"
(a tensor shared by several names, e.g. tied embeddings, is stored once) and the optimizer's
state tensors under "optimizer/<path>". Its text metadata holds one JSON document: the step,
the optimizer's state dict with every tensor replaced by {"tensor": name} (dict keys kept as
[key, value] pairs so integer parameter ids survive JSON), and a SHA-256 of the tensor bytes,
checked on load so a flipped bit is an error instead of silently different weights.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import IO, Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes

from llm_internals.errors import LLMInternalsError
from llm_internals.files import atomic_write_bytes
from llm_internals.models.checkpoint import check_tensors

FORMAT_NAME = "llm-internals-module-checkpoint"
FORMAT_VERSION = 1
METADATA_KEY = "llm_internals"

PathOrFile = str | Path | IO[bytes]


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
    """Inverse of `flatten_state`; a damaged skeleton is an error naming `source`."""
    if isinstance(skeleton, dict):
        if "tensor" in skeleton:
            name = skeleton["tensor"]
            if not isinstance(name, str) or name not in tensors:
                raise LLMInternalsError(f"{source}: tensor {name!r} is missing")
            return tensors[name]
        if "items" in skeleton:
            items = skeleton["items"]
            if not isinstance(items, list) or not all(
                isinstance(kv, list) and len(kv) == 2 and isinstance(kv[0], (str, int))
                for kv in items
            ):
                raise LLMInternalsError(f"{source}: unreadable optimizer state entry {skeleton!r}")
            return {k: unflatten_state(v, tensors, source) for k, v in items}
        if "tuple" in skeleton and isinstance(skeleton["tuple"], list):
            return tuple(unflatten_state(v, tensors, source) for v in skeleton["tuple"])
        raise LLMInternalsError(f"{source}: unreadable optimizer state entry {skeleton!r}")
    if isinstance(skeleton, list):
        return [unflatten_state(v, tensors, source) for v in skeleton]
    return skeleton


def load_optimizer_state(optimizer: Any, state: dict[str, Any], source: str) -> None:
    """`optimizer.load_state_dict(state)`, with torch's complaints turned into one clear error."""
    try:
        optimizer.load_state_dict(state)
    except (ValueError, KeyError, TypeError, RuntimeError) as err:
        raise LLMInternalsError(
            f"{source}: the saved optimizer state does not fit this optimizer ({err})",
            hint="build the model and optimizer exactly as when the checkpoint was saved",
        ) from None


# ----- one file ------------------------------------------------------------------------------
def _unique_state(model: torch.nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors stored once each, {alias: stored name} for names sharing another's storage)."""
    stored: dict[tuple[int, torch.device, tuple, tuple], str] = {}
    tensors: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    for name, tensor in model.state_dict().items():
        key = (tensor.data_ptr(), tensor.device, tuple(tensor.shape), tuple(tensor.stride()))
        if tensor.numel() and key in stored:
            aliases[name] = stored[key]
            continue
        stored[key] = name
        tensors[name] = tensor
    return tensors, aliases


def _tensor_digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the safetensors bytes of `tensors` without metadata (name order fixed)."""
    return hashlib.sha256(save_safetensors_bytes(dict(sorted(tensors.items())))).hexdigest()


def save_checkpoint(model: torch.nn.Module, optimizer: Any, step: int, out: PathOrFile) -> None:
    """Write model weights, optimizer state and `step` to a file path (atomically) or to an
    open binary file object."""
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise LLMInternalsError(f"save_checkpoint: step must be an integer >= 0, got {step!r}")
    model_tensors, aliases = _unique_state(model)
    tensors = {f"model/{n}": t.detach().contiguous().cpu() for n, t in model_tensors.items()}
    skeleton = flatten_state(optimizer.state_dict(), tensors, "optimizer")
    document = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "step": step,
        "aliases": aliases,
        "optimizer_class": type(optimizer).__name__,
        "optimizer": skeleton,
        "sha256": _tensor_digest(tensors),
    }
    data = save_safetensors_bytes(tensors, {METADATA_KEY: json.dumps(document)})
    if isinstance(out, (str, Path)):
        atomic_write_bytes(out, data)
    else:
        out.write(data)


def _read(source: PathOrFile) -> tuple[bytes, str]:
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise LLMInternalsError(f"checkpoint file {path} does not exist")
        return path.read_bytes(), str(path)
    return source.read(), f"checkpoint file object {getattr(source, 'name', '')}".rstrip()


def _header_metadata(data: bytes, source: str) -> dict[str, Any]:
    """The JSON document stored in the safetensors header's metadata."""
    try:
        header_len = int.from_bytes(data[:8], "little")
        if len(data) < 8 or 8 + header_len > len(data):
            raise ValueError("shorter than its header says")
        header = json.loads(data[8 : 8 + header_len])
        document = json.loads(header["__metadata__"][METADATA_KEY])
    except (ValueError, KeyError, TypeError) as err:
        raise LLMInternalsError(
            f"{source}: not a checkpoint written by save_checkpoint ({err})"
        ) from None
    if not isinstance(document, dict) or document.get("format") != FORMAT_NAME:
        raise LLMInternalsError(f"{source}: metadata field 'format' is not {FORMAT_NAME!r}")
    if document.get("format_version") != FORMAT_VERSION:
        raise LLMInternalsError(
            f"{source}: format_version {document.get('format_version')!r} is not supported "
            f"(this version reads {FORMAT_VERSION})"
        )
    step = document.get("step")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise LLMInternalsError(f"{source}: field 'step' must be an integer >= 0, got {step!r}")
    return document


def load_checkpoint(model: torch.nn.Module, optimizer: Any, source: PathOrFile) -> int:
    """Restore `model` and `optimizer` (built as when saved) from a path or binary file object;
    return the saved step. Tensors go to the device each parameter already lives on."""
    data, name = _read(source)
    document = _header_metadata(data, name)
    try:
        tensors = load_safetensors_bytes(data)
    except SafetensorError as err:
        raise LLMInternalsError(f"{name}: not a readable safetensors file ({err})") from None
    if _tensor_digest(tensors) != document.get("sha256"):
        raise LLMInternalsError(
            f"{name}: the tensor bytes do not match the checksum saved with them",
            hint="the file was damaged after it was written; use another copy",
        )
    aliases = document.get("aliases")
    if not isinstance(aliases, dict):
        raise LLMInternalsError(f"{name}: field 'aliases' must be an object")
    state = {n.removeprefix("model/"): t for n, t in tensors.items() if n.startswith("model/")}
    for alias, target in aliases.items():
        if target not in state:
            raise LLMInternalsError(f"{name}: alias {alias!r} names {target!r}, which is missing")
        state[alias] = state[target]
    expected = {n: tuple(t.shape) for n, t in model.state_dict().items()}
    check_tensors(expected, state, name)
    model.load_state_dict(state)
    if document.get("optimizer_class") != type(optimizer).__name__:
        raise LLMInternalsError(
            f"{name}: saved for optimizer {document.get('optimizer_class')!r}, "
            f"not {type(optimizer).__name__}"
        )
    optimizer_state = unflatten_state(document.get("optimizer"), tensors, name)
    load_optimizer_state(optimizer, optimizer_state, name)
    return document["step"]
