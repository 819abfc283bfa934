"""Checkpoint files: safetensors tensors plus JSON, never pickles; atomic writes; shards.

Our own checkpoint is a directory holding
    config.json        {"format": "llm-internals", "format_version": 1,
                        "model_class": "DecoderLM", "config": {...ModelConfig fields...}}
    model.safetensors  the model's state dict under our parameter names (a tied output head is
                       stored once, as the embedding)
HF checkpoints (hf.py) use the same reader/writer with HF names, `model.safetensors` or shards
listed in `model.safetensors.index.json`. Every file is written to a temporary name in the same
directory and renamed over the target, so a crash never leaves a half-written checkpoint.

Our config.json also lists the SHA-256 of each weight file ("checksums"), checked on load, so a
flipped byte is an error rather than silently different weights. Loading checks config.json
field by field, then compares the tensor names and shapes the config implies (a model built on
the meta device: no memory) with the safetensors headers before any weight is allocated, so a
config that asks for terabytes fails at once. A shard index may only name plain file names in
the checkpoint's own folder.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
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


def weight_files(directory: Path) -> dict[str, list[str]]:
    """{weight file name: tensor names it must hold}: model.safetensors alone (names unknown
    until read: an empty list), or the shards of a validated model.safetensors.index.json."""
    directory = Path(directory)
    single, index = directory / SINGLE_FILE, directory / INDEX_FILE
    if single.exists():
        return {SINGLE_FILE: []}
    if index.exists():
        weight_map = read_json(index, "shard index").get("weight_map")
        if not isinstance(weight_map, dict):
            raise LLMInternalsError(f"{index}: no 'weight_map' object")
        files: dict[str, list[str]] = {}
        for name, file_name in weight_map.items():
            if not isinstance(file_name, str):
                raise LLMInternalsError(
                    f"{index}: weight_map[{name!r}] must be a file name, got {file_name!r}"
                )
            if Path(file_name).name != file_name or file_name in ("", ".", ".."):
                raise LLMInternalsError(
                    f"{index}: weight_map[{name!r}] = {file_name!r} is not a plain file name "
                    "in the checkpoint's folder (absolute paths and '..' are refused)"
                )
            files.setdefault(file_name, []).append(name)
        for file_name in files:
            if not (directory / file_name).is_file():
                raise LLMInternalsError(f"{index} names shard {file_name}, which does not exist")
        return dict(sorted(files.items()))
    _no_weights(directory)
    raise AssertionError  # _no_weights always raises


def read_weight_shapes(directory: Path) -> dict[str, tuple[int, ...]]:
    """Every tensor's shape from the safetensors headers alone (no tensor data is read)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for file_name, names in weight_files(directory).items():
        path = Path(directory) / file_name
        try:
            with safe_open(path, "pt") as f:
                found = {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}  # noqa: SIM118
        except (SafetensorError, OSError) as err:
            raise LLMInternalsError(f"{path}: not a readable safetensors file ({err})") from None
        for name in _mapped_names(directory, file_name, names, found):
            shapes[name] = found[name]
    return shapes


def read_weights(directory: Path) -> dict[str, torch.Tensor]:
    """All tensors of model.safetensors or of the shards named in model.safetensors.index.json."""
    tensors: dict[str, torch.Tensor] = {}
    for file_name, names in weight_files(directory).items():
        shard = _load_safetensors(Path(directory) / file_name)
        for name in _mapped_names(directory, file_name, names, shard):
            tensors[name] = shard[name]
    return tensors


def _mapped_names(
    directory: Path, file_name: str, names: list[str], in_file: Mapping[str, Any]
) -> list[str]:
    """The tensor names to take from `file_name`: those the index maps to it (each checked to be
    in the file), or all of them for a single-file checkpoint (no index, `names` empty)."""
    for name in names:
        if name not in in_file:
            raise LLMInternalsError(
                f"{Path(directory) / INDEX_FILE} maps {name} to {file_name}, which lacks it"
            )
    return list(names or in_file)


def _no_weights(directory: Path) -> None:
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
    expected: dict[str, tuple[int, ...]],
    found: dict[str, torch.Tensor] | dict[str, tuple[int, ...]],
    source: str,
) -> None:
    """Raise one error listing missing, unexpected and mis-shaped tensors by name (`found`
    holds tensors or their shapes)."""
    problems = []
    missing = [name for name in expected if name not in found]
    unexpected = [name for name in found if name not in expected]
    if missing:
        problems.append(f"missing tensor(s): {', '.join(missing)}")
    if unexpected:
        problems.append(f"unexpected tensor(s): {', '.join(unexpected)}")
    for name, shape in expected.items():
        got = tuple(getattr(found[name], "shape", found[name])) if name in found else None
        if got is not None and got != tuple(shape):
            problems.append(f"{name} has shape {got}, expected {tuple(shape)}")
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


_LAYER_INDEX = re.compile(r"\.\d+\.")


def materialize_buffers(model: nn.Module, config: ModelConfig) -> None:
    """Rebuild the non-persistent buffers (RoPE frequencies, sinusoid tables) of a model built
    on the meta device, on the CPU."""
    meta_buffers = [name for name, buf in model.named_buffers() if buf.is_meta]
    if not meta_buffers:
        return
    # FFN and expert widths of 1: the buffers do not depend on them, and a full-width copy of one
    # Mixtral-8x7B layer would be 1.4 B random parameters (DeepSeek-V3: 11 B)
    small = {"n_layers": 1, "vocab_size": 1, "d_ff": 1}
    if getattr(config, "moe", None):  # the copy's one layer: sparse if any layer is (its router
        # bias, absent from Mixtral/Qwen-MoE files, is then the zeros of a new router)
        dense = [0] if len(config.moe.get("dense_layers", [])) == config.n_layers else []
        narrow = {"d_expert": 1, "d_shared": 1 if config.moe.get("d_shared") else None}
        small["moe"] = {**config.moe, "dense_layers": dense, **narrow}
    with torch.device("cpu"):  # a one-layer, one-token copy computes the same tables cheaply
        fresh = dict(type(model)(config.replace(**small)).named_buffers())
    for name in meta_buffers:
        module_name, _, attr = name.rpartition(".")
        owner = model.get_submodule(module_name) if module_name else model
        if name not in fresh:  # a per-layer table (an MLA layer's own RoPE): layer 0's
            name = _LAYER_INDEX.sub(".0.", name, 1)
        setattr(owner, attr, fresh[name])


def _tied_aliases(model: nn.Module) -> dict[str, str]:
    """{name: the first name of the same Parameter} for every tied duplicate (lm_head.weight:
    tok_emb.weight when the head is tied)."""
    first: dict[int, str] = {}
    aliases = {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        if id(tensor) in first:
            aliases[name] = first[id(tensor)]
        else:
            first[id(tensor)] = name
    return aliases


def own_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict with each shared (tied) tensor stored once, under its first name."""
    tensors: dict[str, torch.Tensor] = {}
    stored: set[int] = set()
    for name, tensor in model.state_dict(keep_vars=True).items():
        if id(tensor) in stored:  # a tie shares one Parameter object (on any device, meta too)
            continue
        stored.add(id(tensor))
        tensors[name] = tensor.detach()
    return tensors


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def save_checkpoint(model: nn.Module, directory: str | Path) -> None:
    """Save `model` (with a `.config` ModelConfig) in our own format."""
    directory = Path(directory)
    write_weights(directory, own_state_dict(model))
    files = [*weight_files(directory), *([INDEX_FILE] if (directory / INDEX_FILE).exists() else [])]
    write_json(
        directory / "config.json",
        {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "model_class": type(model).__name__,
            "config": model.config.to_dict(),
            "checksums": {name: file_sha256(directory / name) for name in sorted(files)},
        },
    )


def check_layer_count(config: ModelConfig, n_tensors: int, source: str) -> None:
    """Every layer holds at least one tensor: a config with more layers than the weight files
    hold tensors cannot match them (checked before building even a meta-device model)."""
    if config.n_layers > n_tensors:
        raise LLMInternalsError(
            f"{source}: n_layers={config.n_layers}, but the weight files hold only {n_tensors} "
            "tensors",
            hint="does config.json describe these weights?",
        )


def check_fits_in_memory(model: nn.Module, source: str, bytes_per_param: int = 4) -> None:
    """Refuse a model (built on the meta device) whose parameters alone, at `bytes_per_param`,
    exceed this machine's physical memory: a config asking for terabytes fails at once."""
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not knowable here: let allocation decide
        return
    count = sum(t.numel() for t in own_state_dict(model).values())
    if count * bytes_per_param > memory:
        raise LLMInternalsError(
            f"{source}: the model has {count:,} parameters, {count * bytes_per_param / 2**30:,.1f} "
            f"GiB at {bytes_per_param} bytes each, more than this machine's "
            f"{memory / 2**30:,.1f} GiB of memory",
            hint="check d_model, n_layers, d_ff and vocab_size",
        )


def is_own_checkpoint(config_json: dict) -> bool:
    return config_json.get("format") == FORMAT_NAME


def verify_checksums(directory: Path, checksums: Any, source: str) -> None:
    """Each listed file's SHA-256 matches (a folder saved before checksums lists none)."""
    if checksums is None:
        return
    if not isinstance(checksums, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and Path(k).name == k
        for k, v in checksums.items()
    ):
        raise LLMInternalsError(f"{source}: field 'checksums' must map file names to SHA-256s")
    for name, expected in sorted(checksums.items()):
        path = directory / name
        if not path.is_file():
            raise LLMInternalsError(f"{path} is missing (listed in {source})")
        if file_sha256(path) != expected:
            raise LLMInternalsError(
                f"{path}: SHA-256 does not match the one in {source} (the file was damaged "
                "after it was written)",
                hint="restore the file from another copy of the checkpoint",
            )


def load_checkpoint(directory: str | Path, dtype: torch.dtype | None = None) -> nn.Module:
    """Load a checkpoint written by `save_checkpoint`, checking every tensor name and shape
    (against the file headers, before allocating) and every file's checksum."""
    directory = Path(directory)
    source = str(directory / "config.json")
    meta = read_json(directory / "config.json", "model config file")
    if meta.get("format_version") != FORMAT_VERSION:
        raise LLMInternalsError(
            f"{source}: format_version {meta.get('format_version')!r} is not "
            f"supported (this version reads {FORMAT_VERSION})"
        )
    classes = _model_classes()
    class_name = meta.get("model_class")
    if not isinstance(class_name, str) or class_name not in classes:
        raise LLMInternalsError(
            f"{source}: unknown model_class {class_name!r}", hint=f"known: {', '.join(classes)}"
        )
    config = ModelConfig.from_dict(meta.get("config"), source=f"{source}: config")
    verify_checksums(directory, meta.get("checksums"), source)
    shapes = read_weight_shapes(directory)
    check_layer_count(config, len(shapes), source)
    with torch.device("meta"):  # names and shapes only: nothing is allocated
        skeleton = classes[class_name](config)
    check_fits_in_memory(skeleton, source)
    expected = {name: tuple(t.shape) for name, t in own_state_dict(skeleton).items()}
    check_tensors(expected, shapes, str(directory))
    model = skeleton  # the weights are assigned from the file: no time spent on random init
    aliases = _tied_aliases(model)
    model.load_state_dict(read_weights(directory), strict=False, assign=True)
    for alias, target in aliases.items():  # assign=True replaced the shared Parameter: re-tie
        module_name, _, attr = alias.rpartition(".")
        setattr(model.get_submodule(module_name), attr, model.get_parameter(target))
    materialize_buffers(model, config)
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:  # a model class that creates tensors outside its state dict: a bug, not bad input
        raise RuntimeError(f"{source}: tensors not loaded: {left}")
    if dtype is not None:
        model.to(dtype)
    return model
