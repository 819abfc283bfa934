"""Checkpoint files: safetensors tensors plus JSON, never pickles; atomic writes; shards.

Our own checkpoint is a directory holding
    config.json        {"format": "llm-internals", "format_version": 1,
                        "model_class": "DecoderLM", "config": {...ModelConfig fields...}}
    model.safetensors  the model's state dict under our parameter names (a tied output head is
                       stored once, as the embedding)
HF checkpoints (hf.py) use the same reader/writer with HF names, `model.safetensors` or shards
listed in `model.safetensors.index.json`. Every file is written to a temporary name in the same
directory and renamed over the target, so a crash never leaves a half-written checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from llm_internals.errors import LLMInternalsError
from llm_internals.files import atomic_write, read_json, write_json
from llm_internals.models.config import ModelConfig

FORMAT_NAME = "llm-internals"
FORMAT_VERSION = 1
SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"


def write_weights(
    directory: Path, tensors: dict[str, torch.Tensor], max_shard_bytes: int | None = None
) -> None:
    """Write `tensors` as model.safetensors, or as shards plus an index when they exceed
    `max_shard_bytes`. Leftover weight files of an earlier save in `directory` are removed."""
    directory = Path(directory)
    tensors = {name: t.detach().contiguous().cpu() for name, t in tensors.items()}
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, tensor in tensors.items():
        nbytes = tensor.numel() * tensor.element_size()
        if max_shard_bytes is not None and shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = tensor
        size += nbytes
    written: set[str] = set()
    if len(shards) == 1:
        atomic_write(
            directory / SINGLE_FILE, lambda tmp: save_file(shards[0], tmp, {"format": "pt"})
        )
        written.add(SINGLE_FILE)
    else:
        weight_map = {}
        for i, shard in enumerate(shards, start=1):
            file_name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
            atomic_write(
                directory / file_name, lambda tmp, s=shard: save_file(s, tmp, {"format": "pt"})
            )
            weight_map.update(dict.fromkeys(shard, file_name))
            written.add(file_name)
        total = sum(t.numel() * t.element_size() for t in tensors.values())
        write_json(
            directory / INDEX_FILE, {"metadata": {"total_size": total}, "weight_map": weight_map}
        )
        written.add(INDEX_FILE)
    for stale in [*directory.glob("model*.safetensors"), directory / INDEX_FILE]:
        if stale.name not in written and stale.exists():
            stale.unlink()


def read_weights(directory: Path) -> dict[str, torch.Tensor]:
    """All tensors of model.safetensors or of the shards named in model.safetensors.index.json."""
    directory = Path(directory)
    single, index = directory / SINGLE_FILE, directory / INDEX_FILE
    if single.exists():
        return _load_safetensors(single)
    if index.exists():
        weight_map = read_json(index).get("weight_map")
        if not isinstance(weight_map, dict):
            raise LLMInternalsError(f"{index}: no 'weight_map' object")
        tensors: dict[str, torch.Tensor] = {}
        for file_name in sorted(set(weight_map.values())):
            shard_path = directory / file_name
            if not shard_path.exists():
                raise LLMInternalsError(f"{index} names shard {file_name}, which does not exist")
            shard = _load_safetensors(shard_path)
            for name in (n for n, f in weight_map.items() if f == file_name):
                if name not in shard:
                    raise LLMInternalsError(f"{index} maps {name} to {file_name}, which lacks it")
                tensors[name] = shard[name]
        return tensors
    if any(directory.glob("*.bin")) or any(directory.glob("*.pt")):
        raise LLMInternalsError(
            f"{directory} holds only pickle weights (.bin/.pt), which are never loaded here: "
            "unpickling can run arbitrary code",
            hint="convert them to model.safetensors with a tool you trust",
        )
    raise LLMInternalsError(f"{directory} has neither {SINGLE_FILE} nor {INDEX_FILE}")


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(path)
    except (SafetensorError, OSError) as err:
        raise LLMInternalsError(f"{path}: not a readable safetensors file ({err})") from None


def check_tensors(
    expected: dict[str, tuple[int, ...]], found: dict[str, torch.Tensor], source: str
) -> None:
    """Raise one error listing missing, unexpected and mis-shaped tensors by name."""
    problems = []
    missing = [name for name in expected if name not in found]
    unexpected = [name for name in found if name not in expected]
    if missing:
        problems.append(f"missing tensor(s): {', '.join(missing)}")
    if unexpected:
        problems.append(f"unexpected tensor(s): {', '.join(unexpected)}")
    for name, shape in expected.items():
        if name in found and tuple(found[name].shape) != tuple(shape):
            problems.append(f"{name} has shape {tuple(found[name].shape)}, expected {tuple(shape)}")
    if problems:
        raise LLMInternalsError(
            f"{source}: " + "; ".join(problems),
            hint="does config.json describe these weights?",
        )


def _model_classes() -> dict[str, Callable[[ModelConfig], nn.Module]]:
    from llm_internals.models.decoder import DecoderLM
    from llm_internals.models.encoder import EncoderLM
    from llm_internals.models.seq2seq import Seq2SeqLM

    return {"DecoderLM": DecoderLM, "EncoderLM": EncoderLM, "Seq2SeqLM": Seq2SeqLM}


def own_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict with each shared (tied) tensor stored once, under its first name."""
    tensors: dict[str, torch.Tensor] = {}
    stored: set[int] = set()
    for name, tensor in model.state_dict().items():
        if tensor.data_ptr() in stored:
            continue
        stored.add(tensor.data_ptr())
        tensors[name] = tensor
    return tensors


def save_checkpoint(model: nn.Module, directory: str | Path) -> None:
    """Save `model` (with a `.config` ModelConfig) in our own format."""
    directory = Path(directory)
    write_weights(directory, own_state_dict(model))
    write_json(
        directory / "config.json",
        {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "model_class": type(model).__name__,
            "config": model.config.to_dict(),
        },
    )


def is_own_checkpoint(config_json: dict) -> bool:
    return config_json.get("format") == FORMAT_NAME


def load_checkpoint(directory: str | Path, dtype: torch.dtype | None = None) -> nn.Module:
    """Load a checkpoint written by `save_checkpoint`, checking every tensor name and shape."""
    directory = Path(directory)
    meta = read_json(directory / "config.json")
    if meta.get("format_version") != FORMAT_VERSION:
        raise LLMInternalsError(
            f"{directory / 'config.json'}: format_version {meta.get('format_version')!r} is not "
            f"supported (this version reads {FORMAT_VERSION})"
        )
    classes = _model_classes()
    class_name = meta.get("model_class")
    if class_name not in classes:
        raise LLMInternalsError(
            f"{directory / 'config.json'}: unknown model_class {class_name!r}",
            hint=f"known: {', '.join(classes)}",
        )
    config = ModelConfig.from_dict(
        meta.get("config"), source=f"{directory / 'config.json'}: config"
    )
    model = classes[class_name](config)
    tensors = read_weights(directory)
    expected = {name: tuple(t.shape) for name, t in own_state_dict(model).items()}
    check_tensors(expected, tensors, str(directory))
    model.load_state_dict(tensors, strict=False)  # tied copies are filled through the share
    if dtype is not None:
        model.to(dtype)
    return model
