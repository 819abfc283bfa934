"""DeepSeek-V3 tensor names and how each becomes a DecoderLM parameter (or buffer).

Per layer i, HF `model.layers.{i}` -> ours `blocks.{i}`:

    input_layernorm / post_attention_layernorm          -> norm1 / norm2
    self_attn.{q_a_proj, q_a_layernorm, q_b_proj | q_proj,
               kv_a_proj_with_mqa, kv_a_layernorm, kv_b_proj, o_proj}
                                                        -> attn.<same names> (layers/mla.py)
    dense layers (i < first_k_dense_replace):
        mlp.{gate,up,down}_proj                         -> ffn.{gate,up,down}_proj
    MoE layers: mlp.gate.weight, mlp.gate.e_score_correction_bias, mlp.experts.{e}.*_proj,
        mlp.shared_experts.*_proj -> ffn.router.*, ffn.experts.{e}.*, ffn.shared.*
        (the table of MoE names shared with the other MoE families, hf_moe_tensors.py)

Experts on disk: the published checkpoints (and transformers' save_pretrained) store one tensor
per expert, as above, and that is what we write. transformers 5 fuses them in memory into
`mlp.experts.gate_up_proj` [E, 2 * I, d] (gate rows first) and `mlp.experts.down_proj` [E, d, I];
a file holding that fused form (a raw state_dict dump) is split back on import.
Files may also hold `rotary_emb.inv_freq` buffers and the multi-token-prediction layer(s)
`model.layers.{n >= num_hidden_layers}` that DeepSeek-V3 ships (transformers ignores both, as we
do); FP8 block-quantised files (`weight_scale_inv`) are refused with one clear error.
"""

from __future__ import annotations

import re

import torch

from llm_internals.errors import LLMInternalsError
from llm_internals.models.config import ModelConfig
from llm_internals.models.hf_decoder_tensors import TensorMap
from llm_internals.models.hf_moe_tensors import moe_layer_names, unfuse_experts

__all__ = ["TensorMap", "normalize_hf_names", "tensor_maps"]

FFN_PROJECTIONS = ("gate_proj", "up_proj", "down_proj")


def attention_names(config: ModelConfig) -> list[str]:
    """The weights of one MLA layer, named as in transformers' DeepseekV3Attention."""
    if config.mla.get("q_lora_rank") is None:
        query = ["q_proj.weight"]
    else:
        query = ["q_a_proj.weight", "q_a_layernorm.weight", "q_b_proj.weight"]
    rest = ["kv_a_proj_with_mqa.weight", "kv_a_layernorm.weight", "kv_b_proj.weight"]
    return [*query, *rest, "o_proj.weight"]


def layer_names(config: ModelConfig, i: int) -> list[tuple[str, str]]:
    """(HF name under model.layers.{i}, our name under blocks.{i}) for every tensor of block i."""
    pairs = [("input_layernorm.weight", "norm1.weight"),
             ("post_attention_layernorm.weight", "norm2.weight")]  # fmt: skip
    pairs += [(f"self_attn.{name}", f"attn.{name}") for name in attention_names(config)]
    moe = moe_layer_names("deepseek_v3", config, i)
    dense = [(f"mlp.{p}.weight", f"ffn.{p}.weight") for p in FFN_PROJECTIONS]
    return pairs + (moe or dense)


def tensor_maps(config: ModelConfig) -> list[TensorMap]:
    """Every HF tensor of this config and where it goes in DecoderLM."""
    maps = [
        TensorMap("model.embed_tokens.weight", ("tok_emb.weight",)),
        TensorMap("model.norm.weight", ("norm_f.weight",)),
    ]
    for i in range(config.n_layers):
        maps += [
            TensorMap(f"model.layers.{i}.{hf}", (f"blocks.{i}.{ours}",))
            for hf, ours in layer_names(config, i)
        ]
    if not config.tie_embeddings:
        maps.append(TensorMap("lm_head.weight", ("lm_head.weight",)))
    return maps


LAYER = re.compile(r"model\.layers\.(\d+)\.")


def normalize_hf_names(
    tensors: dict[str, torch.Tensor], config: ModelConfig
) -> dict[str, torch.Tensor]:
    """The file's tensors under the per-expert names tensor_maps expects: fused experts split,
    rotary buffers and multi-token-prediction layers dropped, FP8 scale tensors refused."""
    scales = [name for name in tensors if name.endswith("weight_scale_inv")]
    if scales:
        raise LLMInternalsError(
            f"the checkpoint is FP8 block-quantised ({len(scales)} tensors such as {scales[0]}); "
            "only unquantised (bf16/fp16/fp32) DeepSeek-V3 weights are read",
            hint="convert the checkpoint to bf16 first (DeepSeek-V3's inference/fp8_cast_bf16.py)",
        )
    out: dict[str, torch.Tensor] = {}
    for name, tensor in tensors.items():
        layer = LAYER.match(name)
        if name.endswith("rotary_emb.inv_freq") or (
            layer is not None and int(layer.group(1)) >= config.n_layers
        ):
            continue
        out[name] = tensor
    if config.tie_embeddings:
        out.pop("lm_head.weight", None)
    return unfuse_experts(out, "deepseek_v3")
