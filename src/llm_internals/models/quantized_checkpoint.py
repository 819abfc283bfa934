"""Quantised checkpoints: our own checkpoint format with each quantised linear layer's weight
stored as its scheme's parts, and a "quantization" block in config.json.

    config.json        {"format": "llm-internals", ..., "quantization": {"scheme": "int4-g128",
                        "modules": ["blocks.0.attn.q_proj", ...]}}
    model.safetensors  <module>.weight = the codes (int8, uint8 nibbles, float8, bf16), and beside
                       it <module>.weight_scale (and weight_zero, weight_scale2, ...): one set
                       per module; embeddings, norms and the output head stay in full precision

The folder is written into a temporary folder beside the target and renamed at the end, so a
failure leaves nothing behind. Loading checks every part's name, shape and dtype against what the
scheme makes for that layer's shape before building the model (a missing scale is named).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from llm_internals.errors import LLMInternalsError
from llm_internals.files import read_json, write_json
from llm_internals.models.checkpoint import (
    _model_classes,
    _tied_aliases,
    check_tensors,
    materialize_buffers,
    own_state_dict,
    read_weights,
    save_checkpoint,
    verify_checksums,
)
from llm_internals.models.config import ModelConfig
from llm_internals.quant.linear import (
    QuantizedLinear,
    buffer_name,
    cast_unquantized,
    use_kernel_activations,
)
from llm_internals.quant.schemes import get_scheme

QUANTIZATION_KEY = "quantization"
CONFIG_FILE = "config.json"


def is_quantized_checkpoint(directory: Path) -> bool:
    """Whether `directory`'s config.json has a quantization block (read errors: False, the
    ordinary loader reports them)."""
    try:
        return QUANTIZATION_KEY in read_json(directory / CONFIG_FILE, "model config file")
    except LLMInternalsError:
        return False


def save_quantized_checkpoint(
    model: nn.Module,
    scheme: str,
    modules: list[str],
    out: Path,
    tokenizer_file: Path | None = None,
) -> None:
    """Write `model` (its `modules` already QuantizedLinear) to the new folder `out`, atomically."""
    out = Path(out)
    if out.exists():
        raise LLMInternalsError(
            f"{out} already exists", hint="pass a new folder to --out (nothing was written)"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        save_checkpoint(model, staging)
        meta = read_json(staging / CONFIG_FILE, "model config file")
        meta[QUANTIZATION_KEY] = {"scheme": scheme, "modules": modules}
        write_json(staging / CONFIG_FILE, meta)
        if tokenizer_file is not None:
            shutil.copyfile(tokenizer_file, staging / "tokenizer.json")
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def load_quantized_checkpoint(
    directory: Path, device: str | torch.device | None = None, dtype: torch.dtype | None = None
) -> nn.Module:
    """The model of a quantised checkpoint, its quantised layers as QuantizedLinear. `dtype`
    applies to the full-precision tensors (embeddings, norms, biases); the parts keep theirs.
    int8/int4 layers run torch's CPU kernels, their input rounded to bfloat16 (set
    `kernel_activations = None` on a layer for the exact dequantise-then-matmul path)."""
    directory = Path(directory)
    source = str(directory / CONFIG_FILE)
    meta = read_json(directory / CONFIG_FILE, "model config file")
    block = meta.get(QUANTIZATION_KEY)
    if not isinstance(block, dict) or not isinstance(block.get("modules"), list):
        raise LLMInternalsError(f"{source}: 'quantization' must hold 'scheme' and 'modules'")
    scheme = get_scheme(str(block.get("scheme")))
    classes = _model_classes()
    if meta.get("model_class") not in classes:
        raise LLMInternalsError(f"{source}: unknown model_class {meta.get('model_class')!r}")
    config = ModelConfig.from_dict(meta.get("config"), source=f"{source}: config")
    verify_checksums(directory, meta.get("checksums"), source)
    tensors = read_weights(directory)
    with torch.device("meta"):
        model = classes[meta["model_class"]](config)
    layers = {
        name: _take_layer(model, name, scheme.name, tensors, source) for name in block["modules"]
    }
    for name, layer in layers.items():
        parent, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, attr, layer)
    expected = {
        name: tuple(t.shape)
        for name, t in own_state_dict(model).items()
        if t.is_meta  # the quantised layers are already filled in
    }
    check_tensors(expected, {name: tuple(t.shape) for name, t in tensors.items()}, str(directory))
    aliases = _tied_aliases(model)
    model.load_state_dict(tensors, strict=False, assign=True)
    for alias, target in aliases.items():
        module_name, _, attr = alias.rpartition(".")
        setattr(model.get_submodule(module_name), attr, model.get_parameter(target))
    materialize_buffers(model, config)
    if dtype is not None:
        cast_unquantized(model, dtype)
    use_kernel_activations(model, torch.bfloat16)  # int8/int4 on CPU: torch's fast kernels
    return model.to(device) if device is not None else model


def _take_layer(
    model: nn.Module, name: str, scheme: str, tensors: dict[str, torch.Tensor], source: str
) -> QuantizedLinear:
    """Pop the parts of module `name` from `tensors` and build its QuantizedLinear, checking
    each part against what the scheme makes for the layer's shape."""
    try:
        linear = model.get_submodule(name)
    except AttributeError:
        linear = None
    if not isinstance(linear, nn.Linear):
        raise LLMInternalsError(f"{source}: quantization lists {name!r}, not a linear layer here")
    shape = tuple(linear.weight.shape)
    reference = get_scheme(scheme).quantize(torch.zeros(shape), f"{name}.weight")
    parts = {}
    for part, ref in reference.items():
        key = f"{name}.{buffer_name(part)}"
        if key not in tensors:
            raise LLMInternalsError(
                f"{source}: tensor {key!r} ({part} of {name}, scheme {scheme}) is missing from "
                "the weight files",
                hint="re-create the folder with `llm-internals quantize`",
            )
        found = tensors.pop(key)
        if found.shape != ref.shape or found.dtype != ref.dtype:
            raise LLMInternalsError(
                f"{source}: tensor {key!r} is {tuple(found.shape)} {found.dtype}; scheme {scheme} "
                f"needs {tuple(ref.shape)} {ref.dtype} for a {shape} weight"
            )
        parts[part] = found.clone()  # own aligned memory: the CPU kernels crashed on file views
    bias = tensors.pop(f"{name}.bias", None) if linear.bias is not None else None
    if linear.bias is not None and bias is None:
        raise LLMInternalsError(f"{source}: tensor {name + '.bias'!r} is missing")
    return QuantizedLinear(scheme, parts, shape, bias)


def quantization_info(directory: Path) -> dict[str, Any] | None:
    """The quantization block of a checkpoint's config.json, or None."""
    if not is_quantized_checkpoint(directory):
        return None
    return read_json(Path(directory) / CONFIG_FILE, "model config file")[QUANTIZATION_KEY]
