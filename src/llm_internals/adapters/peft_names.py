"""Which module of the HF export each of our LoRA layers is, in PEFT's naming.

Llama family: one to one through `models.hf_decoder_tensors.tensor_maps` (the table that
`save_pretrained` uses), including the row permutation of W_q / W_k for a model in Meta's
interleaved RoPE layout: it applies to B's rows (B A has B's row order), not to A.

GPT-2 family: o, up, down are `attn.c_proj`, `mlp.c_fc`, `mlp.c_proj` one to one, and q, k, v
are the row bands of the fused `attn.c_attn` (a Conv1D of out = 3d). PEFT's lora_A is (R, in)
and lora_B (out, R) for a Conv1D too (it reads in/out from the (in, out) weight), so B needs no
transpose. LoRA on q, k, v of rank r each is one LoRA on c_attn of rank R = r x (targets):

    A_fused = [A_q; A_k; A_v]  (R, d)     B_fused = [[B_q, 0, 0], [0, B_k, 0], [0, 0, B_v]]  (3d, R)

so B_fused A_fused stacks B_q A_q, B_k A_k, B_v A_v (an untargeted band is zero rows). Back
from PEFT, c_attn of rank R is q, k, v of rank R each sharing A_fused, B cut into the bands.

A model with no HF export keeps our module paths (`blocks.0.attn.q_proj`), flagged in its
adapter_config.json: loadable here only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from llm_internals.errors import LLMInternalsError
from llm_internals.models.hf_decoder_config import export_family
from llm_internals.models.hf_decoder_tensors import tensor_maps


def _same(t: torch.Tensor) -> torch.Tensor:
    return t


@dataclass(frozen=True)
class PeftTarget:
    """One module of the file and our layers whose outputs it stacks (row bands, in order)."""

    hf: str
    ours: tuple[str, ...]
    b_to_hf: Callable[[torch.Tensor], torch.Tensor] = _same
    b_to_ours: Callable[[torch.Tensor], torch.Tensor] = _same


def has_hf_names(model: torch.nn.Module) -> bool:
    """False for a model with no HF export, whose adapters can only carry our module paths."""
    config = getattr(model, "config", None)
    if config is None or not hasattr(model, "hidden_states"):
        raise LLMInternalsError(f"LoRA adapters are for decoder language models, not {config!r}")
    try:
        export_family(config)
    except LLMInternalsError:
        return False
    return True


def peft_targets(model: torch.nn.Module) -> list[PeftTarget]:
    """Every module an adapter of `model` may adapt, named as in its HF export."""
    config = model.config
    if not has_hf_names(model):
        return [
            PeftTarget(path, (path,))
            for path, module in model.named_modules()
            if path.startswith("blocks.") and hasattr(module, "in_features")
        ]
    if export_family(config) == "gpt2":
        targets = []
        for i in range(config.n_layers):
            hf, ours = f"transformer.h.{i}", f"blocks.{i}"
            targets += [
                PeftTarget(f"{hf}.attn.c_attn", tuple(f"{ours}.attn.{p}_proj" for p in "qkv")),
                PeftTarget(f"{hf}.attn.c_proj", (f"{ours}.attn.o_proj",)),
                PeftTarget(f"{hf}.mlp.c_fc", (f"{ours}.ffn.up_proj",)),
                PeftTarget(f"{hf}.mlp.c_proj", (f"{ours}.ffn.down_proj",)),
            ]
        return targets
    return [
        PeftTarget(
            m.hf_name.removesuffix(".weight"),
            (m.ours[0].removesuffix(".weight"),),
            b_to_hf=m.to_hf,
            b_to_ours=lambda t, m=m: m.to_ours(t)[0],
        )
        for m in tensor_maps(config)
        if len(m.ours) == 1 and m.ours[0].endswith(".weight") and m.hf_name.endswith(".weight")
    ]
