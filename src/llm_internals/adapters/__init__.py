"""LoRA adapters (floor 2): the layer, injection by module name, merging, PEFT-compatible
adapter folders, and the memory a training setup holds. QLoRA's NF4 base: adapters/qlora.py.
See docs/lora.md."""

from llm_internals.adapters.inject import (
    ALL_LINEAR,
    TARGETS,
    inject_lora,
    lora_layers,
    merge_adapter,
    merge_and_unload,
    resolve_targets,
    set_adapter,
    trainable_parameters,
    unmerge_adapter,
)
from llm_internals.adapters.lora import LoraLinear, LoraSettings
from llm_internals.adapters.memory import TrainingBytes, training_bytes
from llm_internals.adapters.peft_format import load_adapter, save_adapter

__all__ = [
    "ALL_LINEAR",
    "TARGETS",
    "LoraLinear",
    "LoraSettings",
    "TrainingBytes",
    "inject_lora",
    "load_adapter",
    "lora_layers",
    "merge_adapter",
    "merge_and_unload",
    "resolve_targets",
    "save_adapter",
    "set_adapter",
    "trainable_parameters",
    "training_bytes",
    "unmerge_adapter",
]
