"""HF tensor names of MoE layers, in one table, and the fused expert layout some files use.

Checkpoints on disk (and what transformers' `save_pretrained` writes) keep one tensor per
expert projection; our MoELayer keeps one GatedMLP per expert, so each is a plain rename:

    mixtral    model.layers.{i}.block_sparse_moe.gate.weight    -> blocks.{i}.ffn.router.weight
               model.layers.{i}.block_sparse_moe.experts.{e}.w1.weight
                                            -> blocks.{i}.ffn.experts.{e}.gate_proj.weight
               (w3: up_proj, w2: down_proj; Meta's names)
    qwen*_moe  model.layers.{i}.mlp.gate.weight, mlp.experts.{e}.{gate,up,down}_proj.weight
    qwen2_moe  + mlp.shared_expert.{gate,up,down}_proj.weight, mlp.shared_expert_gate.weight
    deepseek_v3  mlp.gate.weight, mlp.gate.e_score_correction_bias, mlp.experts.{e}.*_proj.weight,
               mlp.shared_experts.{gate,up,down}_proj.weight

Inside a loaded transformers 5 model (its state_dict, and files written straight from it) the
experts are fused per layer: `mlp.experts.gate_up_proj` [E, 2 * d_expert, d_model] (gate rows
first, then up) and `mlp.experts.down_proj` [E, d_model, d_expert], and Mixtral's block is
called `mlp`. `unfuse_experts` turns that layout into the per-expert names above on the way in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from llm_internals.models.config import ModelConfig, moe_layer_config


@dataclass(frozen=True)
class MoENames:
    """Where one HF family keeps the parts of a MoE layer (relative to model.layers.{i})."""

    block: str  # the MoE module's name
    projections: dict[str, str]  # our GatedMLP projection -> the HF expert projection
    shared: str | None = None  # the shared expert(s) module
    shared_gate: str | None = None  # Qwen2-MoE's sigmoid gate of the shared expert
    router_bias: bool = False  # DeepSeek-V3's e_score_correction_bias is stored with the gate


SAME = {p: p for p in ("gate_proj", "up_proj", "down_proj")}
MOE_NAMES = {
    "mixtral": MoENames(
        "block_sparse_moe", {"gate_proj": "w1", "up_proj": "w3", "down_proj": "w2"}
    ),
    "qwen2_moe": MoENames("mlp", SAME, shared="shared_expert", shared_gate="shared_expert_gate"),
    "qwen3_moe": MoENames("mlp", SAME),
    "deepseek_v3": MoENames("mlp", SAME, shared="shared_experts", router_bias=True),
}


def moe_layer_names(family: str, config: ModelConfig, layer_idx: int) -> list[tuple[str, str]]:
    """(HF name under model.layers.{i}, our name under blocks.{i}) for every tensor of the MoE
    layer of block `layer_idx`; empty when that block keeps a dense FFN."""
    layer = moe_layer_config(config, layer_idx)
    if layer is None:
        return []
    names = MOE_NAMES[family]
    block = names.block
    pairs = [(f"{block}.gate.weight", "ffn.router.weight")]
    if names.router_bias:
        pairs.append(
            (f"{block}.gate.e_score_correction_bias", "ffn.router.e_score_correction_bias")
        )
    for e in range(layer.n_experts):
        pairs += [
            (f"{block}.experts.{e}.{hf}.weight", f"ffn.experts.{e}.{ours}.weight")
            for ours, hf in names.projections.items()
        ]
    if names.shared is not None:
        pairs += [(f"{block}.{names.shared}.{p}.weight", f"ffn.shared.{p}.weight") for p in SAME]
    if names.shared_gate is not None:
        pairs.append((f"{block}.{names.shared_gate}.weight", "ffn.shared_gate.weight"))
    return pairs


FUSED = re.compile(r"^(model\.layers\.\d+)\.mlp\.(experts\.(gate_up_proj|down_proj)|gate\.\w+)$")


def unfuse_experts(tensors: dict[str, torch.Tensor], family: str) -> dict[str, torch.Tensor]:
    """The fused in-memory layout of transformers 5 (module docstring) as per-expert tensors
    under the file names; other tensors pass through unchanged."""
    names = MOE_NAMES[family]
    out = {}
    for name, tensor in tensors.items():
        match = FUSED.match(name)
        if match is None:
            out[name] = tensor
            continue
        prefix = f"{match.group(1)}.{names.block}"
        if match.group(3) is None:  # the router, under Mixtral's block name
            out[f"{prefix}.{match.group(2)}"] = tensor
        elif match.group(3) == "gate_up_proj":  # [E, 2 * d_expert, d_model]
            for e, expert in enumerate(tensor):
                gate, up = expert.chunk(2, dim=0)
                out[f"{prefix}.experts.{e}.{names.projections['gate_proj']}.weight"] = gate
                out[f"{prefix}.experts.{e}.{names.projections['up_proj']}.weight"] = up
        else:  # down_proj [E, d_model, d_expert]
            for e, expert in enumerate(tensor):
                out[f"{prefix}.experts.{e}.{names.projections['down_proj']}.weight"] = expert
    return out
