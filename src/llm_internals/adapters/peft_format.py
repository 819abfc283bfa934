"""Adapter folders PEFT reads and writes: adapter_model.safetensors + adapter_config.json.

Tensor names are PEFT's for a causal LM, built on the HF export of our model:

    base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight    A: (r, in)
    base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight    B: (out, r)
    base_model.model.transformer.h.0.attn.c_attn.lora_B.weight        B: (3d, R)  (GPT-2)

(`PeftModel.save_pretrained` drops the adapter name from the keys.) Which HF module each of our
layers is, and how GPT-2's fused c_attn holds q, k, v: adapters/peft_names.py. A module whose r
or alpha differs from the config's `r` / `lora_alpha` (the fused c_attn) is listed in
`rank_pattern` / `alpha_pattern`, as PEFT does; GPT-2 folders set `fan_in_fan_out` (Conv1D).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from llm_internals.adapters.inject import lora_layers, replace_module
from llm_internals.adapters.lora import LoraLinear, LoraSettings
from llm_internals.adapters.peft_names import PeftTarget, has_hf_names, peft_targets
from llm_internals.errors import LLMInternalsError
from llm_internals.files import atomic_write_bytes, read_json, write_json
from llm_internals.models.hf_decoder_config import export_family

ADAPTER_FILE = "adapter_model.safetensors"
CONFIG_FILE = "adapter_config.json"
PREFIX = "base_model.model."
OWN_NAMES = "llm_internals_module_names"  # adapter_config.json field: keys use our module paths


@dataclass(frozen=True)
class FileLora:
    """One module's LoRA as the file holds it: A (r, in), B (out, r) in HF row order."""

    hf: str
    a: torch.Tensor
    b: torch.Tensor
    r: int
    alpha: float


def _fuse(model: torch.nn.Module, target: PeftTarget, name: str) -> FileLora | None:
    """The target's LoRA: one layer as it is, or q/k/v as A stacked and B block-diagonal with
    rank R = sum of ranks and alpha' such that alpha'/R (rsLoRA: alpha'/sqrt R) = our scale."""
    modules = [model.get_submodule(path) for path in target.ours]
    parts = [
        (i, m) for i, m in enumerate(modules) if isinstance(m, LoraLinear) and name in m.settings
    ]
    if not parts:
        return None
    settings = {m.settings[name] for _, m in parts}
    if len(settings) != 1:
        raise LLMInternalsError(
            f"adapter {name!r} has different settings on {', '.join(target.ours)}; PEFT stores "
            f"them as one module {target.hf!r}, which has one r and alpha"
        )
    s = settings.pop()
    a = torch.cat([m.lora_A[name].weight.detach().float().cpu() for _, m in parts])
    starts = [sum(m.out_features for m in modules[:i]) for i in range(len(modules) + 1)]
    b = torch.zeros(starts[-1], s.r * len(parts))
    for column, (i, m) in enumerate(parts):
        band = m.lora_B[name].weight.detach().float().cpu()
        b[starts[i] : starts[i + 1], column * s.r : (column + 1) * s.r] = band
    growth = len(parts) ** 0.5 if s.use_rslora else len(parts)
    alpha = s.alpha if len(parts) == 1 else s.alpha * growth
    return FileLora(target.hf, a.contiguous(), target.b_to_hf(b).contiguous(), a.shape[0], alpha)


def _adapter_loras(model: torch.nn.Module, name: str) -> tuple[list[FileLora], LoraSettings]:
    """The file's modules of adapter `name` and the settings its layers have most often."""
    found = [m.settings[name] for m in lora_layers(model).values() if name in m.settings]
    if not found:
        raise LLMInternalsError(f"adapter {name!r} is not loaded")
    if len({(s.use_rslora, s.dropout) for s in found}) != 1:
        raise LLMInternalsError(f"adapter {name!r} mixes rsLoRA or dropout settings per layer")
    loras = [lora for t in peft_targets(model) if (lora := _fuse(model, t, name))]
    return loras, Counter(found).most_common(1)[0][0]


def save_adapter(
    model: torch.nn.Module,
    directory: str | Path,
    name: str = "default",
    base_model_name_or_path: str | None = None,
) -> Path:
    """Write adapter `name` as a PEFT adapter folder (weights first, then the config, each file
    atomically, so a folder whose config exists is complete)."""
    directory = Path(directory)
    loras, settings = _adapter_loras(model, name)
    tensors = {}
    for lora in loras:
        tensors[f"{PREFIX}{lora.hf}.lora_A.weight"] = lora.a
        tensors[f"{PREFIX}{lora.hf}.lora_B.weight"] = lora.b
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(directory / ADAPTER_FILE, save(tensors, {"format": "pt"}))
    config = peft_config(settings, _target_modules(model, loras), base_model_name_or_path)
    config["rank_pattern"], config["alpha_pattern"] = _patterns(loras, settings)
    if has_hf_names(model):
        config["fan_in_fan_out"] = export_family(model.config) == "gpt2"  # Conv1D: (in, out)
    else:
        config[OWN_NAMES] = True
    write_json(directory / CONFIG_FILE, config)
    return directory


def _leaf(module: str) -> str:
    return module.rsplit(".", 1)[-1]


def _target_modules(model: torch.nn.Module, loras: list[FileLora]) -> list[str]:
    """Last names (`q_proj`) where every module of that name is adapted, else the paths (GPT-2's
    `c_proj` is both attn.c_proj and mlp.c_proj; PEFT matches a module by its name's end)."""
    adapted = {lora.hf for lora in loras}
    names = set()
    for module in adapted:
        same_leaf = {t.hf for t in peft_targets(model) if _leaf(t.hf) == _leaf(module)}
        names.add(_leaf(module) if same_leaf <= adapted else module)
    return sorted(names)


def _patterns(loras: list[FileLora], default: LoraSettings) -> tuple[dict, dict]:
    """PEFT's rank_pattern / alpha_pattern for the modules whose r or alpha is not the default;
    keyed by the last name (`c_attn`) when every module of that name agrees, else by path.
    PEFT matches a key to a module path ending in `.key`."""
    ranks, alphas = {}, {}
    for lora in loras:
        if (lora.r, lora.alpha) == (default.r, default.alpha):
            continue
        same = {(x.r, x.alpha) for x in loras if _leaf(x.hf) == _leaf(lora.hf)}
        key = _leaf(lora.hf) if len(same) == 1 else lora.hf
        ranks[key], alphas[key] = lora.r, lora.alpha
    return ranks, alphas


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


def read_settings(directory: Path) -> tuple[LoraSettings, dict, dict]:
    """(LoraSettings, rank_pattern, alpha_pattern) from adapter_config.json; what we cannot run
    is an error naming the field. `fan_in_fan_out` only says whether the base is a Conv1D,
    which the model decides (PEFT corrects it the same way), so any value is accepted."""
    path = directory / CONFIG_FILE
    config = read_adapter_config(directory)
    unsupported = {"peft_type": "LORA", "bias": "none", "use_dora": False, "modules_to_save": None}
    for field, wanted in unsupported.items():
        value = config.get(field, wanted)
        if value != wanted and not (field == "modules_to_save" and value == []):
            raise LLMInternalsError(
                f"{path}: field {field!r} is {value!r}; only {wanted!r} is supported"
            )
    patterns = [config.get(field) or {} for field in ("rank_pattern", "alpha_pattern")]
    if not all(isinstance(p, dict) for p in patterns):
        raise LLMInternalsError(f"{path}: rank_pattern and alpha_pattern must be JSON objects")
    try:
        settings = LoraSettings(
            r=config["r"],
            alpha=float(config.get("lora_alpha", 8)),
            dropout=float(config.get("lora_dropout", 0.0)),
            use_rslora=bool(config.get("use_rslora", False)),
        )
    except KeyError:
        raise LLMInternalsError(f"{path}: field 'r' is missing") from None
    except (TypeError, ValueError) as err:
        raise LLMInternalsError(f"{path}: {err}") from None
    return settings, patterns[0], patterns[1]


def module_settings(
    default: LoraSettings, ranks: dict, alphas: dict, module: str, path: Path
) -> LoraSettings:
    """The settings PEFT gives `module`: the first pattern key the module path ends in
    (`(.*\\.)?key$`, as peft.utils.other.get_pattern_key), else the default."""

    def lookup(pattern: dict, fallback: Any) -> Any:
        key = next((k for k in pattern if re.match(rf"(.*\.)?({k})$", module)), None)
        return fallback if key is None else pattern[key]

    try:
        return replace(
            default, r=lookup(ranks, default.r), alpha=float(lookup(alphas, default.alpha))
        )
    except (TypeError, ValueError) as err:
        raise LLMInternalsError(
            f"{path}: rank_pattern / alpha_pattern for {module!r}: {err}"
        ) from None


def load_adapter(model: torch.nn.Module, directory: str | Path, name: str = "default") -> list[str]:
    """Add the PEFT adapter in `directory` to `model` as adapter `name` (active); return the
    adapted module paths. A fused module (GPT-2's c_attn, rank R) becomes q, k, v of rank R
    each, sharing A, with B cut into its row bands. Every tensor is checked before the model is
    touched: a tensor whose module the model lacks, or whose shape does not fit, is one error
    naming both."""
    directory = Path(directory)
    if (directory / "adapter" / CONFIG_FILE).is_file():  # a `finetune --out` run folder
        directory = directory / "adapter"
    if not (directory / CONFIG_FILE).is_file():
        raise LLMInternalsError(
            f"{directory} has no {CONFIG_FILE}",
            hint="--adapter takes a folder written by `llm-internals finetune` or PEFT",
        )
    default, ranks, alphas = read_settings(directory)
    weights_path = directory / ADAPTER_FILE
    if not weights_path.is_file():
        raise LLMInternalsError(f"{weights_path} does not exist")
    try:
        tensors = load_file(str(weights_path))
    except SafetensorError as err:
        message = f"{weights_path}: not a readable safetensors file ({err})"
        raise LLMInternalsError(message) from None
    own_names = bool(read_adapter_config(directory).get(OWN_NAMES, False))
    if own_names == has_hf_names(model):
        kinds = (
            "a model with no HF export (our module names)",
            "an HF-exportable model (PEFT names)",
        )
        raise LLMInternalsError(
            f"{weights_path}: the adapter is for {kinds[not own_names]}, the model is "
            f"{kinds[own_names]}",
            hint="the adapter was trained for another base model; pass that one to --model",
        )
    targets = {t.hf: t for t in peft_targets(model)}
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        hf, dot, kind = key.removeprefix(PREFIX).rpartition(".lora_")
        if not key.startswith(PREFIX) or not dot or kind not in ("A.weight", "B.weight"):
            raise LLMInternalsError(f"{weights_path}: tensor {key!r} is not a LoRA A/B weight")
        if hf not in targets:
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
        target = targets[hf]
        settings = module_settings(default, ranks, alphas, hf, directory / CONFIG_FILE)
        bases = [model.get_submodule(ours) for ours in target.ours]
        width = sum(base.out_features for base in bases)
        expected = {"A": (settings.r, bases[0].in_features), "B": (width, settings.r)}
        for kind, shape in expected.items():
            tensor = pair.get(kind)
            if tensor is None:
                raise LLMInternalsError(f"{weights_path}: module {hf!r} has no lora_{kind} tensor")
            if tuple(tensor.shape) != shape:
                raise LLMInternalsError(
                    f"{weights_path}: tensor {PREFIX}{hf}.lora_{kind}.weight has shape "
                    f"{tuple(tensor.shape)} but module {hf!r} ({', '.join(target.ours)}) needs "
                    f"{shape} (r = {settings.r}, in = {bases[0].in_features}, out = {width})",
                    hint="the adapter was trained for another base model; pass that one to --model",
                )
        bands = target.b_to_ours(pair["B"]).split([base.out_features for base in bases])
        for ours, base, band in zip(target.ours, bases, bands, strict=True):
            plan.append((ours, base, settings, pair["A"], band))
    for param in model.parameters():
        param.requires_grad_(False)
    for ours, base, settings, a, b in plan:
        layer = base if isinstance(base, LoraLinear) else LoraLinear(base)
        if layer is not base:
            replace_module(model, ours, layer)
        layer.add_adapter(name, settings)
        with torch.no_grad():
            layer.lora_A[name].weight.copy_(a)
            layer.lora_B[name].weight.copy_(b)
    return [ours for ours, *_ in plan]
