"""Adapter folders PEFT reads and writes: adapter_model.safetensors + adapter_config.json.

Tensor names are PEFT's for a causal LM, built on the HF export of our model:

    base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight    A: (r, in)
    base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight    B: (out, r)

(`PeftModel.save_pretrained` drops the adapter name from the keys.) Our module paths map to HF's
through the same tensor maps that `models.save_pretrained` uses, including the row permutation
of W_q / W_k for a model in Meta's interleaved RoPE layout: it applies to B's rows (B A has B's
row order) and not to A.

GPT-2's fused c_attn (Conv1D) has no one-to-one LoRA equivalent, so an adapter of a GPT-2-shaped
model (the tour's) is written with our module names (`base_model.model.blocks.0.attn.q_proj...`)
and `"llm_internals_module_names": true` in its config: the same two files, loadable here only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from llm_internals.adapters.inject import lora_layers, replace_module
from llm_internals.adapters.lora import LoraLinear, LoraSettings
from llm_internals.errors import LLMInternalsError
from llm_internals.files import atomic_write_bytes, read_json, write_json
from llm_internals.models.hf_decoder_config import export_family
from llm_internals.models.hf_decoder_tensors import TensorMap, tensor_maps

ADAPTER_FILE = "adapter_model.safetensors"
CONFIG_FILE = "adapter_config.json"
PREFIX = "base_model.model."
OWN_NAMES = "llm_internals_module_names"  # adapter_config.json field: keys use our module paths


def uses_own_names(model: torch.nn.Module) -> bool:
    """True for a GPT-2-shaped model (or one with no HF export), whose adapters cannot carry
    HF/PEFT names."""
    config = getattr(model, "config", None)
    if config is None or not hasattr(model, "hidden_states"):
        raise LLMInternalsError(f"LoRA adapters are for decoder language models, not {config!r}")
    try:
        return export_family(config) == "gpt2"
    except LLMInternalsError:  # no HF equivalent at all: our names are the only ones there are
        return True


def _module_maps(model: torch.nn.Module) -> dict[str, tuple[str, TensorMap]]:
    """{our module path: (file module path, its weight's TensorMap)} for every linear weight."""
    config = model.config
    if uses_own_names(model):
        return {
            path: (path, TensorMap(f"{path}.weight", (f"{path}.weight",)))
            for path, module in model.named_modules()
            if path.startswith("blocks.") and hasattr(module, "in_features")
        }
    maps = {}
    for m in tensor_maps(config):
        if len(m.ours) == 1 and m.ours[0].endswith(".weight") and m.hf_name.endswith(".weight"):
            maps[m.ours[0].removesuffix(".weight")] = (m.hf_name.removesuffix(".weight"), m)
    return maps


def adapter_settings(model: torch.nn.Module, name: str) -> LoraSettings:
    """The settings adapter `name` has on every layer (one file holds one set)."""
    layers = lora_layers(model).values()
    found = {layer.settings[name] for layer in layers if name in layer.settings}
    if len(found) != 1:
        raise LLMInternalsError(
            f"adapter {name!r} is {'not loaded' if not found else 'set differently per layer'}"
        )
    return found.pop()


def adapter_tensors(model: torch.nn.Module, name: str = "default") -> dict[str, torch.Tensor]:
    """PEFT-named A and B tensors (fp32, CPU) of adapter `name`."""
    maps = _module_maps(model)
    tensors = {}
    for path, layer in lora_layers(model).items():
        if name not in layer.settings:
            continue
        hf, m = maps[path]
        a, b = layer.lora_A[name].weight.detach(), layer.lora_B[name].weight.detach()
        tensors[f"{PREFIX}{hf}.lora_A.weight"] = a.float().cpu().contiguous()
        tensors[f"{PREFIX}{hf}.lora_B.weight"] = m.to_hf(b).float().cpu().contiguous()
    return tensors


def save_adapter(
    model: torch.nn.Module,
    directory: str | Path,
    name: str = "default",
    base_model_name_or_path: str | None = None,
) -> Path:
    """Write adapter `name` as a PEFT adapter folder (weights first, then the config, each file
    atomically, so a folder whose config exists is complete)."""
    directory = Path(directory)
    settings = adapter_settings(model, name)
    tensors = adapter_tensors(model, name)
    leaves = sorted({key.split(".")[-3] for key in tensors})
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(directory / ADAPTER_FILE, save(tensors, {"format": "pt"}))
    config = peft_config(settings, leaves, base_model_name_or_path)
    if uses_own_names(model):
        config[OWN_NAMES] = True
    write_json(directory / CONFIG_FILE, config)
    return directory


def peft_config(
    settings: LoraSettings, target_modules: list[str], base: str | None
) -> dict[str, Any]:
    """adapter_config.json as PEFT's LoraConfig writes it (the fields it needs to load)."""
    return {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base,
        "r": settings.r,
        "lora_alpha": settings.alpha,
        "lora_dropout": settings.dropout,
        "use_rslora": settings.use_rslora,
        "target_modules": target_modules,
        "bias": "none",
        "fan_in_fan_out": False,
        "init_lora_weights": True,
        "inference_mode": True,
        "modules_to_save": None,
        "rank_pattern": {},
        "alpha_pattern": {},
        "use_dora": False,
    }


def read_adapter_config(directory: Path) -> dict[str, Any]:
    path = directory / CONFIG_FILE
    config = read_json(path, "adapter config file")
    if not isinstance(config, dict):
        raise LLMInternalsError(f"{path}: not a JSON object")
    return config


def read_settings(directory: Path) -> LoraSettings:
    """LoraSettings from adapter_config.json; what we cannot run is an error naming the field."""
    path = directory / CONFIG_FILE
    config = read_adapter_config(directory)
    unsupported = {"peft_type": "LORA", "bias": "none", "fan_in_fan_out": False,
                   "use_dora": False, "modules_to_save": None}  # fmt: skip
    for field, wanted in unsupported.items():
        value = config.get(field, wanted)
        if value != wanted and not (field == "modules_to_save" and value == []):
            raise LLMInternalsError(
                f"{path}: field {field!r} is {value!r}; only {wanted!r} is supported"
            )
    for field in ("rank_pattern", "alpha_pattern"):
        if config.get(field):
            raise LLMInternalsError(f"{path}: field {field!r} (per-layer values) is not supported")
    try:
        return LoraSettings(
            r=config["r"],
            alpha=float(config.get("lora_alpha", 8)),
            dropout=float(config.get("lora_dropout", 0.0)),
            use_rslora=bool(config.get("use_rslora", False)),
        )
    except KeyError:
        raise LLMInternalsError(f"{path}: field 'r' is missing") from None
    except (TypeError, ValueError) as err:
        raise LLMInternalsError(f"{path}: {err}") from None


def load_adapter(model: torch.nn.Module, directory: str | Path, name: str = "default") -> list[str]:
    """Add the PEFT adapter in `directory` to `model` as adapter `name` (active); return the
    adapted module paths. Every tensor is checked before the model is touched: a tensor whose
    module the model lacks, or whose shape does not fit, is one error naming both."""
    directory = Path(directory)
    if (directory / "adapter" / CONFIG_FILE).is_file():  # a `finetune --out` run folder
        directory = directory / "adapter"
    if not (directory / CONFIG_FILE).is_file():
        raise LLMInternalsError(
            f"{directory} has no {CONFIG_FILE}",
            hint="--adapter takes a folder written by `llm-internals finetune` or PEFT",
        )
    settings = read_settings(directory)
    weights_path = directory / ADAPTER_FILE
    if not weights_path.is_file():
        raise LLMInternalsError(f"{weights_path} does not exist")
    try:
        tensors = load_file(str(weights_path))
    except SafetensorError as err:
        message = f"{weights_path}: not a readable safetensors file ({err})"
        raise LLMInternalsError(message) from None
    own_names = bool(read_adapter_config(directory).get(OWN_NAMES, False))
    if own_names != uses_own_names(model):
        kinds = ("a GPT-2-shaped model (our module names)", "a Llama-family model (PEFT names)")
        raise LLMInternalsError(
            f"{weights_path}: the adapter is for {kinds[not own_names]}, the model is "
            f"{kinds[own_names]}",
            hint="the adapter was trained for another base model; pass that one to --model",
        )
    to_ours = {hf: (ours, m) for ours, (hf, m) in _module_maps(model).items()}
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        hf, dot, kind = key.removeprefix(PREFIX).rpartition(".lora_")
        if not key.startswith(PREFIX) or not dot or kind not in ("A.weight", "B.weight"):
            raise LLMInternalsError(f"{weights_path}: tensor {key!r} is not a LoRA A/B weight")
        if hf not in to_ours:
            raise LLMInternalsError(
                f"{weights_path}: tensor {key!r} adapts module {hf!r}, which this model does not "
                f"have ({model.config.n_layers} layers)",
                hint="the adapter was trained for another base model; pass that one to --model",
            )
        pairs.setdefault(hf, {})[kind[0]] = tensor
    if not pairs:
        raise LLMInternalsError(f"{weights_path}: no LoRA tensors")
    plan = []
    for hf, pair in pairs.items():
        ours, m = to_ours[hf]
        base = model.get_submodule(ours)
        expected = {"A": (settings.r, base.in_features), "B": (base.out_features, settings.r)}
        for kind, shape in expected.items():
            tensor = pair.get(kind)
            if tensor is None:
                raise LLMInternalsError(f"{weights_path}: module {hf!r} has no lora_{kind} tensor")
            if tuple(tensor.shape) != shape:
                raise LLMInternalsError(
                    f"{weights_path}: tensor {PREFIX}{hf}.lora_{kind}.weight has shape "
                    f"{tuple(tensor.shape)} but module {hf!r} ({ours}) needs {shape} (r = "
                    f"{settings.r}, in = {base.in_features}, out = {base.out_features})",
                    hint="the adapter was trained for another base model; pass that one to --model",
                )
        plan.append((ours, base, pair["A"], m.to_ours(pair["B"])[0]))
    for param in model.parameters():
        param.requires_grad_(False)
    for ours, base, a, b in plan:
        layer = base if isinstance(base, LoraLinear) else LoraLinear(base)
        if layer is not base:
            replace_module(model, ours, layer)
        layer.add_adapter(name, settings)
        with torch.no_grad():
            layer.lora_A[name].weight.copy_(a)
            layer.lora_B[name].weight.copy_(b)
    return [ours for ours, *_ in plan]
