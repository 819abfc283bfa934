"""QLoRA's base: every linear layer of the decoder blocks frozen in NF4 (quant/nf4.py), with
optional double quantisation of the block scales; LoRA then goes on top (inject_lora) and trains
exactly as on a full-precision base. Embeddings, norms and the output head stay as they are, as
in the paper (only the linear layers of the blocks are quantised)."""

from __future__ import annotations

import torch
from torch import nn

from llm_internals.adapters.inject import replace_module
from llm_internals.quant.nf4 import NF4Linear


def quantize_base_nf4(
    model: nn.Module, double_quant: bool = True, compute_dtype: torch.dtype = torch.float32
) -> list[str]:
    """Replace each nn.Linear inside model.blocks with a frozen NF4Linear; return their paths.
    A width that NF4's 64-value blocks cannot take is an error naming the layer (quant.nf4)."""
    paths = [
        path
        for path, module in model.named_modules()
        if path.startswith("blocks.") and type(module) is nn.Linear
    ]
    for path in paths:
        linear = model.get_submodule(path)
        replace_module(model, path, NF4Linear(linear, double_quant=double_quant,
                                              compute_dtype=compute_dtype))  # fmt: skip
    for param in model.parameters():
        param.requires_grad_(False)
    return paths
