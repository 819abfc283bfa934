"""Putting LoRA into a model by module name, and taking it out again (merge and unload).

Targets name the decoder's linear layers by their last name component, the same in our models
(models/decoder.py, layers/multihead.py, layers/ffn.py) and in HF Llama-family files:

    q, k, v, o          blocks.{i}.attn.{q,k,v,o}_proj      model.layers.{i}.self_attn.*_proj
    gate, up, down      blocks.{i}.ffn.{gate,up,down}_proj  model.layers.{i}.mlp.*_proj
    all-linear          every one of those the model has (never lm_head, as in PEFT)

The HF names (`q_proj`, ...) are accepted too. Everything but the adapters is frozen.
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn

from llm_internals.adapters.lora import LoraLinear, LoraSettings
from llm_internals.errors import LLMInternalsError

TARGETS = {"q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "o_proj",
           "gate": "gate_proj", "up": "up_proj", "down": "down_proj"}  # fmt: skip
ALL_LINEAR = "all-linear"
TARGET_HINT = f"--targets takes a comma-separated list of {', '.join(TARGETS)} or {ALL_LINEAR}"


def resolve_targets(targets: str | Iterable[str]) -> tuple[tuple[str, ...], bool]:
    """(module leaf names, whether "all-linear" asked for them) from "q,v" or ["q_proj", ...]."""
    items = targets.split(",") if isinstance(targets, str) else list(targets)
    items = [t.strip() for t in items if t.strip()]
    if items == [ALL_LINEAR]:
        return tuple(TARGETS.values()), True
    names = []
    for item in items:
        leaf = TARGETS.get(item, item)
        if leaf not in TARGETS.values():
            raise LLMInternalsError(f"unknown LoRA target {item!r}", hint=TARGET_HINT)
        if leaf not in names:
            names.append(leaf)
    if not names:
        raise LLMInternalsError("no LoRA targets given", hint=TARGET_HINT)
    return tuple(names), False


def _is_target(path: str, module: nn.Module, leaves: tuple[str, ...]) -> bool:
    return (
        path.startswith("blocks.")
        and path.rsplit(".", 1)[-1] in leaves
        and hasattr(module, "in_features")
        and not isinstance(module, (nn.ModuleDict, nn.Dropout))
    )


def replace_module(model: nn.Module, path: str, module: nn.Module) -> None:
    """Put `module` at dotted `path` inside `model`."""
    parent, _, leaf = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, module)


def inject_lora(
    model: nn.Module,
    settings: LoraSettings,
    targets: str | Iterable[str] = "q,k,v,o",
    name: str = "default",
) -> list[str]:
    """Wrap each targeted linear layer in a LoraLinear with a new adapter `name` (active), freeze
    everything else; return the adapted module paths. Layers already wrapped get one more adapter.
    A target that matches no layer is an error naming it and the layers the model has."""
    leaves, all_linear = resolve_targets(targets)
    found = {path: m for path, m in model.named_modules() if _is_target(path, m, leaves)}
    matched = {path.rsplit(".", 1)[-1] for path in found}
    missing = [leaf for leaf in leaves if leaf not in matched]
    if not found or (missing and not all_linear):
        present = sorted({p.rsplit(".", 1)[-1] for p, m in model.named_modules()
                          if _is_target(p, m, tuple(TARGETS.values()))})  # fmt: skip
        raise LLMInternalsError(
            f"LoRA targets {', '.join(missing or leaves)} match no layer of this "
            f"{type(model).__name__} (its linear layers: {', '.join(present) or 'none'})",
            hint=TARGET_HINT,
        )
    for param in model.parameters():
        param.requires_grad_(False)
    for path, module in found.items():
        if not isinstance(module, LoraLinear):
            module = LoraLinear(module)
            replace_module(model, path, module)
        module.add_adapter(name, settings)
    return list(found)


def lora_layers(model: nn.Module) -> dict[str, LoraLinear]:
    """Every LoraLinear in `model` by path."""
    return {path: m for path, m in model.named_modules() if isinstance(m, LoraLinear)}


def set_adapter(model: nn.Module, name: str | None) -> None:
    """Make adapter `name` active in every layer that has it; others run their base alone."""
    layers = lora_layers(model)
    if name is not None and not any(name in layer.settings for layer in layers.values()):
        loaded = sorted({n for layer in layers.values() for n in layer.settings})
        raise LLMInternalsError(
            f"adapter {name!r} is not loaded (loaded: {', '.join(loaded) or 'none'})"
        )
    for layer in layers.values():
        layer.set_adapter(name if name in layer.settings else None)


def merge_adapter(model: nn.Module) -> None:
    for layer in lora_layers(model).values():
        layer.merge()


def unmerge_adapter(model: nn.Module) -> None:
    for layer in lora_layers(model).values():
        layer.unmerge()


def merge_and_unload(model: nn.Module) -> nn.Module:
    """Fold the active adapter into the base weights and put the plain layers back: the result
    is the base model class again, savable in our format and HF's."""
    for path, layer in lora_layers(model).items():
        layer.merge()
        replace_module(model, path, layer.base)
    return model


def trainable_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
