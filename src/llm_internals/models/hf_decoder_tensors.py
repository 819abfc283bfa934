"""HF tensor names of the decoder families and how each becomes a DecoderLM parameter.

GPT-2 ("gpt2"): `transformer.h.{i}.attn.c_attn` holds W_q, W_k, W_v fused, and GPT-2's Conv1D
layers store weights as (in, out), the transpose of nn.Linear's (out, in).
Llama, Mistral, Qwen2, Qwen3: `model.layers.{i}.self_attn.{q,k,v,o}_proj`, `mlp.{gate,up,down}_proj`
as nn.Linear, plus `self_attn.{q,k}_norm` for Qwen3; MoE layers (Mixtral, Qwen2/3-MoE) take
their names from hf_moe_tensors.py. HF files use RoPE's rotate-half layout; a
model in Meta's interleaved layout has its q/k rows permuted on the way in and out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from llm_internals.layers.rope import half_to_interleaved, interleaved_to_half
from llm_internals.models.config import ModelConfig
from llm_internals.models.hf_decoder_config import export_family
from llm_internals.models.hf_moe_tensors import MOE_NAMES, moe_layer_names, unfuse_experts


@dataclass(frozen=True)
class TensorMap:
    """One HF tensor and the parameter(s) of ours it becomes, with the conversions both ways."""

    hf_name: str
    ours: tuple[str, ...]
    to_ours: Callable[[torch.Tensor], tuple[torch.Tensor, ...]] = lambda t: (t,)
    to_hf: Callable[..., torch.Tensor] = lambda t: t


def tensor_maps(config: ModelConfig) -> list[TensorMap]:
    """Every HF tensor of this config and where it goes in DecoderLM."""
    family = export_family(config)
    maps = _gpt2_maps(config) if family == "gpt2" else _llama_maps(config, family)
    if not config.tie_embeddings:
        maps.append(TensorMap("lm_head.weight", ("lm_head.weight",)))
    return maps


def _transposed() -> dict[str, Callable]:
    return {"to_ours": lambda t: (t.t(),), "to_hf": lambda t: t.t()}


def _gpt2_maps(config: ModelConfig) -> list[TensorMap]:
    d = config.d_model
    maps = [
        TensorMap("transformer.wte.weight", ("tok_emb.weight",)),
        TensorMap("transformer.wpe.weight", ("pos_emb.weight",)),
        TensorMap("transformer.ln_f.weight", ("norm_f.weight",)),
        TensorMap("transformer.ln_f.bias", ("norm_f.bias",)),
    ]
    for i in range(config.n_layers):
        hf, ours = f"transformer.h.{i}", f"blocks.{i}"
        qkv = tuple(f"{ours}.attn.{p}_proj" for p in "qkv")
        maps += [
            TensorMap(f"{hf}.ln_1.weight", (f"{ours}.norm1.weight",)),
            TensorMap(f"{hf}.ln_1.bias", (f"{ours}.norm1.bias",)),
            TensorMap(  # Conv1D (d, 3d) = [W_q^T | W_k^T | W_v^T]
                f"{hf}.attn.c_attn.weight",
                tuple(f"{name}.weight" for name in qkv),
                to_ours=lambda t: tuple(part.t() for part in t.split(d, dim=1)),
                to_hf=lambda q, k, v: torch.cat((q.t(), k.t(), v.t()), dim=1),
            ),
            TensorMap(
                f"{hf}.attn.c_attn.bias",
                tuple(f"{name}.bias" for name in qkv),
                to_ours=lambda t: tuple(t.split(d)),
                to_hf=lambda q, k, v: torch.cat((q, k, v)),
            ),
            TensorMap(f"{hf}.attn.c_proj.weight", (f"{ours}.attn.o_proj.weight",), **_transposed()),
            TensorMap(f"{hf}.attn.c_proj.bias", (f"{ours}.attn.o_proj.bias",)),
            TensorMap(f"{hf}.ln_2.weight", (f"{ours}.norm2.weight",)),
            TensorMap(f"{hf}.ln_2.bias", (f"{ours}.norm2.bias",)),
            TensorMap(f"{hf}.mlp.c_fc.weight", (f"{ours}.ffn.up_proj.weight",), **_transposed()),
            TensorMap(f"{hf}.mlp.c_fc.bias", (f"{ours}.ffn.up_proj.bias",)),
            TensorMap(
                f"{hf}.mlp.c_proj.weight", (f"{ours}.ffn.down_proj.weight",), **_transposed()
            ),
            TensorMap(f"{hf}.mlp.c_proj.bias", (f"{ours}.ffn.down_proj.bias",)),
        ]
    return maps


def _llama_maps(config: ModelConfig, family: str) -> list[TensorMap]:
    maps = [
        TensorMap("model.embed_tokens.weight", ("tok_emb.weight",)),
        TensorMap("model.norm.weight", ("norm_f.weight",)),
    ]
    for i in range(config.n_layers):
        hf, ours = f"model.layers.{i}", f"blocks.{i}"
        maps += [
            TensorMap(f"{hf}.input_layernorm.weight", (f"{ours}.norm1.weight",)),
            TensorMap(f"{hf}.post_attention_layernorm.weight", (f"{ours}.norm2.weight",)),
        ]
        for proj, heads in (("q", config.n_heads), ("k", config.n_kv_heads), ("v", 0), ("o", 0)):
            params = ["weight"]
            if (proj != "o" and config.qkv_bias) or (proj == "o" and config.attn_out_bias):
                params.append("bias")
            for param in params:
                extra = {}
                if heads and config.rope_layout == "interleaved":  # HF files use the half layout
                    extra = {
                        "to_ours": lambda t, h=heads: (half_to_interleaved(t, h),),
                        "to_hf": lambda t, h=heads: interleaved_to_half(t, h),
                    }
                maps.append(
                    TensorMap(
                        f"{hf}.self_attn.{proj}_proj.{param}",
                        (f"{ours}.attn.{proj}_proj.{param}",),
                        **extra,
                    )
                )
        if config.qk_norm:
            maps += [
                TensorMap(f"{hf}.self_attn.q_norm.weight", (f"{ours}.attn.q_norm.weight",)),
                TensorMap(f"{hf}.self_attn.k_norm.weight", (f"{ours}.attn.k_norm.weight",)),
            ]
        moe_names = moe_layer_names(family, config, i) if family in MOE_NAMES else []
        maps += [TensorMap(f"{hf}.{theirs}", (f"{ours}.{mine}",)) for theirs, mine in moe_names]
        for proj in ("gate", "up", "down") if not moe_names else ():
            params = ["weight", "bias"] if config.mlp_bias else ["weight"]
            for param in params:
                maps.append(
                    TensorMap(f"{hf}.mlp.{proj}_proj.{param}", (f"{ours}.ffn.{proj}_proj.{param}",))
                )
    return maps


def normalize_hf_names(
    tensors: dict[str, torch.Tensor], config: ModelConfig
) -> dict[str, torch.Tensor]:
    """Accept the name variants found in real files; drop buffers that are not weights.

    The original GPT-2 files lack the "transformer." prefix and carry causal-mask buffers
    ("attn.bias", "attn.masked_bias"); some Llama files carry "rotary_emb.inv_freq"; MoE files
    written from a transformers 5 state dict hold fused experts.
    """
    if config.family in MOE_NAMES:
        tensors = unfuse_experts(tensors, config.family)
    out = {}
    for name, tensor in tensors.items():
        if config.family == "gpt2":
            if not name.startswith(("transformer.", "lm_head.")):
                name = "transformer." + name
            if name.endswith((".attn.bias", ".attn.masked_bias")):
                continue
        if name.endswith("rotary_emb.inv_freq"):
            continue
        out[name] = tensor
    if config.tie_embeddings:
        out.pop("lm_head.weight", None)  # a tied head, if stored, is a copy of the embedding
    return out
