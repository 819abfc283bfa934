"""HF BERT checkpoints (model_type "bert") to and from EncoderLM.

Names in a `BertForMaskedLM` file, and where they go:
    bert.embeddings.{word,position,token_type}_embeddings   tok_emb, pos_emb, type_emb
    bert.embeddings.LayerNorm                               emb_norm
    bert.encoder.layer.{i}.attention.self.{query,key,value} blocks.{i}.attn.{q,k,v}_proj
    bert.encoder.layer.{i}.attention.output.dense           blocks.{i}.attn.o_proj
    bert.encoder.layer.{i}.attention.output.LayerNorm       blocks.{i}.norm1
    bert.encoder.layer.{i}.intermediate.dense               blocks.{i}.ffn.up_proj
    bert.encoder.layer.{i}.output.dense                     blocks.{i}.ffn.down_proj
    bert.encoder.layer.{i}.output.LayerNorm                 blocks.{i}.norm2
    cls.predictions.transform.{dense,LayerNorm}             mlm_dense, mlm_norm
    cls.predictions.bias (+ decoder.bias when untied)       lm_bias
    cls.predictions.decoder.weight (only when untied)       lm_head
All linear weights are nn.Linear (out, in), as ours, so nothing is transposed.
A `BertModel` file has the same names without "bert." and no "cls.": it loads as an encoder
without the masked-LM head. The pooler and the next-sentence head are not part of EncoderLM and
are dropped on load.
"""

from __future__ import annotations

from typing import Any

import torch

from llm_internals.errors import LLMInternalsError
from llm_internals.models.config import ModelConfig
from llm_internals.models.hf_decoder_config import _activation, _architecture, _field
from llm_internals.models.hf_decoder_tensors import TensorMap

WITH_HEAD = ("BertForMaskedLM", "BertForPreTraining")
WITHOUT_HEAD = ("BertModel",)
HF_ACTIVATION = {"gelu": "gelu", "gelu_tanh": "gelu_new", "relu": "relu", "silu": "silu"}


def config_from_hf(hf: dict[str, Any], source: str) -> ModelConfig:
    """Our ModelConfig for an HF BERT config.json (already parsed)."""
    architecture = _architecture(hf, "BertForMaskedLM", source)
    if architecture not in WITH_HEAD + WITHOUT_HEAD:
        raise LLMInternalsError(
            f"{source}: architecture {architecture!r} is not supported",
            hint=f"supported: {', '.join(WITH_HEAD + WITHOUT_HEAD)}",
        )
    position_type = hf.get("position_embedding_type", "absolute")
    if position_type != "absolute":
        raise LLMInternalsError(
            f"{source}: position_embedding_type {position_type!r} is not supported",
            hint="only absolute (learned) positions are",
        )
    if hf.get("is_decoder") or hf.get("add_cross_attention"):
        raise LLMInternalsError(f"{source}: BERT as a decoder (is_decoder/add_cross_attention)")
    return ModelConfig(
        family="bert",
        vocab_size=_field(hf, "vocab_size", source),
        d_model=_field(hf, "hidden_size", source),
        n_layers=_field(hf, "num_hidden_layers", source),
        n_heads=_field(hf, "num_attention_heads", source),
        d_ff=_field(hf, "intermediate_size", source),
        max_seq_len=_field(hf, "max_position_embeddings", source, 512),
        position="learned",
        norm="layernorm",
        norm_eps=_field(hf, "layer_norm_eps", source, 1e-12, float),
        norm_position="post",
        ffn="mlp",
        activation=_activation(hf.get("hidden_act", "gelu"), "hidden_act", source),
        qkv_bias=True,
        attn_out_bias=True,
        mlp_bias=True,
        tie_embeddings=_field(hf, "tie_word_embeddings", source, True, bool),
        extra={
            "type_vocab_size": _field(hf, "type_vocab_size", source, 2),
            "mlm_head": architecture in WITH_HEAD,
            "pad_token_id": _field(hf, "pad_token_id", source, 0),
        },
    )


def config_to_hf(config: ModelConfig) -> dict[str, Any]:
    """An HF BertConfig dict for `config`; a clear error when the config is not BERT-shaped."""
    problems = []
    if (config.position, config.norm, config.norm_position, config.ffn) != (
        "learned", "layernorm", "post", "mlp"
    ):  # fmt: skip
        problems.append("BERT has learned positions, post-norm LayerNorm and a plain MLP")
    if config.n_kv_heads != config.n_heads or config.head_dim * config.n_heads != config.d_model:
        problems.append("BERT needs n_kv_heads == n_heads and head_dim == d_model / n_heads")
    if not (config.qkv_bias and config.attn_out_bias and config.mlp_bias) or config.qk_norm:
        problems.append("BERT has biases everywhere and no QK-norm")
    if problems:
        raise LLMInternalsError("cannot export as bert: " + "; ".join(problems))
    mlm_head = config.extra.get("mlm_head", True)
    return {
        "architectures": [WITH_HEAD[0] if mlm_head else WITHOUT_HEAD[0]],
        "model_type": "bert",
        "dtype": "float32",
        "vocab_size": config.vocab_size,
        "hidden_size": config.d_model,
        "num_hidden_layers": config.n_layers,
        "num_attention_heads": config.n_heads,
        "intermediate_size": config.d_ff,
        "hidden_act": HF_ACTIVATION[config.activation],
        "max_position_embeddings": config.max_seq_len,
        "type_vocab_size": config.extra.get("type_vocab_size", 2),
        "layer_norm_eps": config.norm_eps,
        "pad_token_id": config.extra.get("pad_token_id", 0),
        "hidden_dropout_prob": config.dropout,
        "attention_probs_dropout_prob": config.dropout,
        "tie_word_embeddings": config.tie_embeddings,
    }


def _linear(hf: str, ours: str) -> list[TensorMap]:
    return [
        TensorMap(f"{hf}.weight", (f"{ours}.weight",)),
        TensorMap(f"{hf}.bias", (f"{ours}.bias",)),
    ]


def tensor_maps(config: ModelConfig) -> list[TensorMap]:
    """Every HF tensor of this config and where it goes in EncoderLM."""
    maps = [
        TensorMap("bert.embeddings.word_embeddings.weight", ("tok_emb.weight",)),
        TensorMap("bert.embeddings.position_embeddings.weight", ("pos_emb.weight",)),
        TensorMap("bert.embeddings.token_type_embeddings.weight", ("type_emb.weight",)),
        *_linear("bert.embeddings.LayerNorm", "emb_norm"),  # a LayerNorm has weight and bias too
    ]
    for i in range(config.n_layers):
        hf, ours = f"bert.encoder.layer.{i}", f"blocks.{i}"
        for hf_proj, proj in (("query", "q"), ("key", "k"), ("value", "v")):
            maps += _linear(f"{hf}.attention.self.{hf_proj}", f"{ours}.attn.{proj}_proj")
        maps += [
            *_linear(f"{hf}.attention.output.dense", f"{ours}.attn.o_proj"),
            *_linear(f"{hf}.attention.output.LayerNorm", f"{ours}.norm1"),
            *_linear(f"{hf}.intermediate.dense", f"{ours}.ffn.up_proj"),
            *_linear(f"{hf}.output.dense", f"{ours}.ffn.down_proj"),
            *_linear(f"{hf}.output.LayerNorm", f"{ours}.norm2"),
        ]
    if config.extra.get("mlm_head", True):
        maps += [
            *_linear("cls.predictions.transform.dense", "mlm_dense"),
            *_linear("cls.predictions.transform.LayerNorm", "mlm_norm"),
            TensorMap("cls.predictions.bias", ("lm_bias",)),
        ]
        if not config.tie_embeddings:  # both bias names: transformers 5 reads decoder.bias
            maps += [
                TensorMap("cls.predictions.decoder.weight", ("lm_head.weight",)),
                TensorMap(  # a copy: safetensors refuses two names for one tensor
                    "cls.predictions.decoder.bias", ("lm_bias",), to_hf=lambda t: t.clone()
                ),
            ]
    return maps


def normalize_hf_names(
    tensors: dict[str, torch.Tensor], config: ModelConfig
) -> dict[str, torch.Tensor]:
    """Accept the name variants of real BERT files and drop what EncoderLM does not hold.

    - `BertModel` files lack the "bert." prefix; TF-converted files say LayerNorm.gamma/beta.
    - Dropped: the pooler and next-sentence head (`bert.pooler.*`, `cls.seq_relationship.*`),
      `position_ids` buffers, and with tied embeddings the decoder weight and bias (copies of the
      word embeddings and of `cls.predictions.bias`). Untied, transformers 5 adds
      `cls.predictions.decoder.bias` and leaves `cls.predictions.bias` unused; the former wins,
      and both are written back.
    """
    out = {}
    for name, tensor in tensors.items():
        if name.startswith(("embeddings.", "encoder.", "pooler.")):
            name = "bert." + name
        name = name.replace("LayerNorm.gamma", "LayerNorm.weight")
        name = name.replace("LayerNorm.beta", "LayerNorm.bias")
        if name.startswith(("bert.pooler.", "cls.seq_relationship.")) or name.endswith(
            "position_ids"
        ):
            continue
        out[name] = tensor
    if config.tie_embeddings:
        out.pop("cls.predictions.decoder.weight", None)
        decoder_bias = out.pop("cls.predictions.decoder.bias", None)
        if decoder_bias is not None:
            out.setdefault("cls.predictions.bias", decoder_bias)
    else:  # untied, transformers 5 adds decoder.bias (cls.predictions.bias is then unused)
        bias = out.get("cls.predictions.decoder.bias", out.get("cls.predictions.bias"))
        if bias is not None:
            out["cls.predictions.bias"] = out["cls.predictions.decoder.bias"] = bias
    return out
