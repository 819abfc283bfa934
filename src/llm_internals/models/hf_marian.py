"""HF Marian checkpoints (model_type "marian", `MarianMTModel`) to and from Seq2SeqLM.

Names in the file, and where they go:
    model.shared.weight                                      tok_emb (source, target and head)
    model.{encoder,decoder}.embed_tokens.weight              src_emb / tok_emb when not shared
    model.encoder.layers.{i}.self_attn.{q,k,v,out}_proj      encoder_blocks.{i}.attn.{q,k,v,o}_proj
    model.encoder.layers.{i}.self_attn_layer_norm            encoder_blocks.{i}.norm1
    model.encoder.layers.{i}.fc1 / fc2                       encoder_blocks.{i}.ffn.up/down_proj
    model.encoder.layers.{i}.final_layer_norm                encoder_blocks.{i}.norm2
    model.decoder.layers.{i}.self_attn[_layer_norm]          decoder_blocks.{i}.self_attn / norm1
    model.decoder.layers.{i}.encoder_attn[_layer_norm]       decoder_blocks.{i}.cross_attn / norm2
    model.decoder.layers.{i}.fc1 / fc2 / final_layer_norm    decoder_blocks.{i}.ffn / norm3
    final_logits_bias (1, V)                                 final_logits_bias (V,)
    lm_head.weight (only when untied)                        lm_head.weight

Marian's LayerNorms use torch's default eps of 1e-5 (config.json does not say). Its sinusoidal
position tables (`embed_positions`) are recomputed, not read; older files that store them are
checked against our table, so a file with different positions fails loudly.
"""

from __future__ import annotations

from typing import Any

import torch

from llm_internals.errors import LLMInternalsError
from llm_internals.layers.positional import sinusoidal_table
from llm_internals.models.config import ModelConfig
from llm_internals.models.hf_decoder_config import _activation, _architecture, _field
from llm_internals.models.hf_decoder_tensors import TensorMap
from llm_internals.models.seq2seq import Seq2SeqSettings

MARIAN_NORM_EPS = 1e-5
HF_ACTIVATION = {"gelu": "gelu", "gelu_tanh": "gelu_new", "relu": "relu", "silu": "swish"}
POSITION_TABLES = ("model.encoder.embed_positions.weight", "model.decoder.embed_positions.weight")


def config_from_hf(hf: dict[str, Any], source: str) -> ModelConfig:
    """Our ModelConfig for an HF MarianConfig dict (already parsed)."""
    architecture = _architecture(hf, "MarianMTModel", source)
    if architecture != "MarianMTModel":
        raise LLMInternalsError(
            f"{source}: architecture {architecture!r} is not supported", hint="use MarianMTModel"
        )
    vocab_size = _field(hf, "vocab_size", source)
    tied = _field(hf, "tie_word_embeddings", source, True, bool)
    # transformers 5 ties "shared" embeddings only together with the output head: shared but
    # untied means three separate tables (source, target, head), which is what we build then.
    share_flag = _field(hf, "share_encoder_decoder_embeddings", source, True, bool)
    shared = share_flag and tied
    pad = _field(hf, "pad_token_id", source)
    extra = {
        "decoder_layers": _field(hf, "decoder_layers", source),
        "decoder_heads": _field(hf, "decoder_attention_heads", source),
        "decoder_ffn": _field(hf, "decoder_ffn_dim", source),
        "share_embeddings": shared,
        "scale_embedding": _field(hf, "scale_embedding", source, False, bool),
        "sinusoidal_layout": "halves",
        "pad_token_id": pad,
        "decoder_start_token_id": _field(hf, "decoder_start_token_id", source, pad),
        "eos_token_id": _field(hf, "eos_token_id", source, 0),
    }
    if not shared:
        extra["decoder_vocab_size"] = (
            vocab_size if share_flag else _field(hf, "decoder_vocab_size", source, vocab_size)
        )
    return ModelConfig(
        family="marian",
        vocab_size=vocab_size,
        d_model=_field(hf, "d_model", source),
        n_layers=_field(hf, "encoder_layers", source),
        n_heads=_field(hf, "encoder_attention_heads", source),
        d_ff=_field(hf, "encoder_ffn_dim", source),
        max_seq_len=_field(hf, "max_position_embeddings", source, 1024),
        position="sinusoidal",
        norm="layernorm",
        norm_eps=MARIAN_NORM_EPS,
        norm_position="post",
        ffn="mlp",
        activation=_activation(
            hf.get("activation_function", "gelu"), "activation_function", source
        ),
        qkv_bias=True,
        attn_out_bias=True,
        mlp_bias=True,
        tie_embeddings=tied,
        extra=extra,
    )


def config_to_hf(config: ModelConfig) -> dict[str, Any]:
    """An HF MarianConfig dict for `config`; a clear error when the config is not Marian-shaped."""
    settings = Seq2SeqSettings.from_config(config)
    decoder = settings.decoder_config(config)
    problems = []
    if (config.norm, config.norm_position, config.ffn) != ("layernorm", "post", "mlp"):
        problems.append("Marian is post-norm LayerNorm with a plain MLP")
    if config.norm_eps != MARIAN_NORM_EPS:
        problems.append(f"Marian's LayerNorm eps is fixed at {MARIAN_NORM_EPS}")
    if settings.sinusoidal_layout != "halves":
        problems.append("Marian's sinusoidal table has all sines first (layout 'halves')")
    for part in (config, decoder):
        if part.n_kv_heads != part.n_heads or part.head_dim * part.n_heads != part.d_model:
            problems.append("Marian needs n_kv_heads == n_heads and head_dim == d_model / n_heads")
            break
    if not (config.qkv_bias and config.attn_out_bias and config.mlp_bias) or config.qk_norm:
        problems.append("Marian has biases everywhere and no QK-norm")
    if problems:
        raise LLMInternalsError("cannot export as marian: " + "; ".join(problems))
    return {
        "architectures": ["MarianMTModel"],
        "model_type": "marian",
        "dtype": "float32",
        "is_encoder_decoder": True,
        "vocab_size": config.vocab_size,
        "decoder_vocab_size": settings.target_vocab_size(config),
        "d_model": config.d_model,
        "encoder_layers": config.n_layers,
        "encoder_attention_heads": config.n_heads,
        "encoder_ffn_dim": config.d_ff,
        "decoder_layers": decoder.n_layers,
        "decoder_attention_heads": decoder.n_heads,
        "decoder_ffn_dim": decoder.d_ff,
        "activation_function": HF_ACTIVATION[config.activation],
        "max_position_embeddings": config.max_seq_len,
        "scale_embedding": settings.scale_embedding,
        "share_encoder_decoder_embeddings": settings.share_embeddings,
        "tie_word_embeddings": config.tie_embeddings,
        "pad_token_id": settings.pad_token_id,
        "decoder_start_token_id": settings.decoder_start_token_id,
        "eos_token_id": settings.eos_token_id,
        "forced_eos_token_id": settings.eos_token_id,
        "dropout": config.dropout,
        "attention_dropout": 0.0,
        "activation_dropout": 0.0,
    }


def _linear(hf: str, ours: str) -> list[TensorMap]:
    return [
        TensorMap(f"{hf}.weight", (f"{ours}.weight",)),
        TensorMap(f"{hf}.bias", (f"{ours}.bias",)),
    ]


def _attention(hf: str, ours: str) -> list[TensorMap]:
    maps = []
    for hf_proj, proj in (("q", "q"), ("k", "k"), ("v", "v"), ("out", "o")):
        maps += _linear(f"{hf}.{hf_proj}_proj", f"{ours}.{proj}_proj")
    return maps


def tensor_maps(config: ModelConfig) -> list[TensorMap]:
    """Every HF tensor of this config and where it goes in Seq2SeqLM."""
    settings = Seq2SeqSettings.from_config(config)
    if settings.share_embeddings:
        maps = [TensorMap("model.shared.weight", ("tok_emb.weight",))]
    else:
        maps = [
            TensorMap("model.encoder.embed_tokens.weight", ("src_emb.weight",)),
            TensorMap("model.decoder.embed_tokens.weight", ("tok_emb.weight",)),
        ]
    maps.append(
        TensorMap(
            "final_logits_bias",
            ("final_logits_bias",),
            to_ours=lambda t: (t.reshape(-1),),
            to_hf=lambda t: t.reshape(1, -1),
        )
    )
    if not config.tie_embeddings:
        maps.append(TensorMap("lm_head.weight", ("lm_head.weight",)))
    for i in range(config.n_layers):
        hf, ours = f"model.encoder.layers.{i}", f"encoder_blocks.{i}"
        maps += [
            *_attention(f"{hf}.self_attn", f"{ours}.attn"),
            *_linear(f"{hf}.self_attn_layer_norm", f"{ours}.norm1"),
            *_linear(f"{hf}.fc1", f"{ours}.ffn.up_proj"),
            *_linear(f"{hf}.fc2", f"{ours}.ffn.down_proj"),
            *_linear(f"{hf}.final_layer_norm", f"{ours}.norm2"),
        ]
    for i in range(settings.decoder_config(config).n_layers):
        hf, ours = f"model.decoder.layers.{i}", f"decoder_blocks.{i}"
        maps += [
            *_attention(f"{hf}.self_attn", f"{ours}.self_attn"),
            *_linear(f"{hf}.self_attn_layer_norm", f"{ours}.norm1"),
            *_attention(f"{hf}.encoder_attn", f"{ours}.cross_attn"),
            *_linear(f"{hf}.encoder_attn_layer_norm", f"{ours}.norm2"),
            *_linear(f"{hf}.fc1", f"{ours}.ffn.up_proj"),
            *_linear(f"{hf}.fc2", f"{ours}.ffn.down_proj"),
            *_linear(f"{hf}.final_layer_norm", f"{ours}.norm3"),
        ]
    return maps


def normalize_hf_names(
    tensors: dict[str, torch.Tensor], config: ModelConfig
) -> dict[str, torch.Tensor]:
    """Drop the copies and fixed tables real Marian files may hold; fill what HF fills.

    - `embed_positions` tables: checked against our sinusoids, then dropped.
    - With shared embeddings, `model.{encoder,decoder}.embed_tokens.weight` are copies of
      `model.shared.weight`; with a tied head, `lm_head.weight` is one too.
    - share_encoder_decoder_embeddings with an untied head: transformers 5 reads the encoder's
      and decoder's own tables (`model.shared.weight` is unused); a transformers 4 file that
      stores only `model.shared.weight` gives both tables its values.
    - A missing `final_logits_bias` is zeros (what transformers does).
    """
    settings = Seq2SeqSettings.from_config(config)
    out = dict(tensors)
    for name in POSITION_TABLES:
        stored = out.pop(name, None)
        if stored is not None:
            _check_position_table(name, stored)
    shared = out.get("model.shared.weight")
    for name in ("model.encoder.embed_tokens.weight", "model.decoder.embed_tokens.weight"):
        if settings.share_embeddings and shared is not None:
            out.pop(name, None)
        elif not settings.share_embeddings and shared is not None and name not in out:
            out[name] = shared  # a transformers 4 file: one table, stored once
    if not settings.share_embeddings:
        out.pop("model.shared.weight", None)
    if config.tie_embeddings:
        out.pop("lm_head.weight", None)
    if "final_logits_bias" not in out:
        out["final_logits_bias"] = torch.zeros(1, settings.target_vocab_size(config))
    return out


def _check_position_table(name: str, stored: torch.Tensor) -> None:
    if stored.dim() != 2:
        raise LLMInternalsError(f"{name} has shape {tuple(stored.shape)}, expected 2 dimensions")
    expected = sinusoidal_table(stored.shape[0], stored.shape[1], layout="halves")
    if not torch.allclose(stored.float(), expected, atol=1e-4):
        raise LLMInternalsError(
            f"{name} differs from the sinusoidal table Marian uses",
            hint="this checkpoint's positions are not Marian's fixed sinusoids",
        )
