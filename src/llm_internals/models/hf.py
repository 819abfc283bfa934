"""Load and save Hugging Face checkpoint directories (and our own, through the same entry point).

`load_pretrained(path)` reads `config.json`, picks the converter for its `model_type`, builds our
model, reads `model.safetensors` (or the shards of `model.safetensors.index.json`), renames and
reshapes every tensor, and names each missing, unexpected or mis-shaped tensor in one error.
`save_pretrained(model, path)` writes the files back under HF names, loadable by `transformers`.
Nothing is ever unpickled.

A converter (see hf_decoder.py) supplies `config_from_hf`, `config_to_hf`, `tensor_maps` and
`normalize_hf_names`; encoder and encoder-decoder families register theirs in `CONVERTERS`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from llm_internals.errors import LLMInternalsError
from llm_internals.files import read_json, write_json
from llm_internals.models import hf_bert, hf_decoder, hf_deepseek_v3, hf_marian
from llm_internals.models.checkpoint import (
    check_fits_in_memory,
    check_layer_count,
    check_tensors,
    is_own_checkpoint,
    load_checkpoint,
    materialize_buffers,
    read_weight_shapes,
    read_weights,
    write_weights,
)
from llm_internals.models.decoder import DecoderLM
from llm_internals.models.encoder import EncoderLM
from llm_internals.models.seq2seq import Seq2SeqLM


@dataclass(frozen=True)
class Converter:
    """How one group of HF model types maps onto one of our model classes."""

    model_types: tuple[str, ...]
    model_class: type[nn.Module]
    names: ModuleType  # a module with config_from_hf, config_to_hf, tensor_maps, normalize_hf_names


CONVERTERS: list[Converter] = [
    Converter(tuple(hf_decoder.ARCHITECTURES), DecoderLM, hf_decoder),
    Converter(("bert",), EncoderLM, hf_bert),
    Converter(("marian",), Seq2SeqLM, hf_marian),
    Converter(("deepseek_v3",), DecoderLM, hf_deepseek_v3),
]


def _converter_for_type(model_type: str | None, source: str) -> Converter:
    for converter in CONVERTERS:
        if model_type in converter.model_types:
            return converter
    known = sorted(t for c in CONVERTERS for t in c.model_types)
    raise LLMInternalsError(
        f"{source}: model_type {model_type!r} is not supported",
        hint=f"supported: {', '.join(known)}",
    )


def _converter_for_model(model: nn.Module) -> Converter:
    """The converter of the model's family when it has one (deepseek_v3 and the decoder families
    share DecoderLM), else the first one for its class. Latent attention is DeepSeek-V3's."""
    config = getattr(model, "config", None)
    family = "deepseek_v3" if getattr(config, "mla", None) else getattr(config, "family", None)
    for converter in CONVERTERS:
        if isinstance(model, converter.model_class) and family in converter.model_types:
            return converter
    for converter in CONVERTERS:
        if isinstance(model, converter.model_class):
            return converter
    raise LLMInternalsError(f"no HF format is known for {type(model).__name__}")


def load_pretrained(
    path: str | Path,
    dtype: torch.dtype = torch.float32,
    attn_impl: str = "scratch",
    fused_ops: bool = False,
) -> nn.Module:
    """Our model with the weights of the HF (or own-format) checkpoint directory `path`.

    attn_impl/fused_ops choose the written-out steps ("scratch", False: what lessons record) or
    torch's fused kernels ("sdpa", True: the fast path).
    """
    directory = Path(path)
    if not directory.is_dir():
        raise LLMInternalsError(f"checkpoint directory {directory} does not exist")
    config_path = directory / "config.json"
    hf_config = read_json(config_path, "model config file")
    if is_own_checkpoint(hf_config):
        model = load_checkpoint(directory, dtype=dtype)
        if hasattr(model, "set_attn_impl"):
            model.set_attn_impl(attn_impl)
            model.set_fused_ops(fused_ops)
        return model
    converter = _converter_for_type(hf_config.get("model_type"), str(config_path))
    try:
        config = converter.names.config_from_hf(hf_config, str(config_path))
    except LLMInternalsError as err:  # ModelConfig's own checks do not know the file
        raise (
            err
            if err.message.startswith(str(config_path))
            else LLMInternalsError(
                f"{config_path}: {err.message.removeprefix('model config: ')}", err.hint
            )
        ) from None
    config = config.replace(attn_impl=attn_impl, fused_ops=fused_ops)
    check_layer_count(config, len(read_weight_shapes(directory)), str(config_path))
    with torch.device("meta"):  # no memory, no time spent on random init of weights
        model = converter.model_class(config)
    check_fits_in_memory(model, str(config_path), torch.finfo(dtype).bits // 8)
    tensors = converter.names.normalize_hf_names(read_weights(directory), config)
    maps = converter.names.tensor_maps(config)
    ours = dict(model.state_dict())
    expected = {m.hf_name: _hf_shape(m, ours) for m in maps}
    check_tensors(expected, tensors, str(directory))
    state = {}
    for m in maps:
        for name, tensor in zip(m.ours, m.to_ours(tensors[m.hf_name]), strict=True):
            state[name] = tensor.to(dtype).contiguous()
    model.load_state_dict(state, strict=False, assign=True)
    materialize_buffers(model, config)
    if config.tie_embeddings and hasattr(model, "lm_head"):
        model.lm_head.tie_to(model.tok_emb)
    missing = [n for n, p in model.named_parameters() if p.is_meta]
    if missing:  # a converter bug, not a user error: every parameter must come from the file
        raise RuntimeError(f"parameters not loaded: {missing}")
    return model.eval()


def _hf_shape(m: hf_decoder.TensorMap, ours: dict[str, torch.Tensor]) -> tuple[int, ...]:
    """The shape the HF tensor must have, derived from our parameters' shapes."""
    parts = [torch.empty(ours[name].shape, device="meta") for name in m.ours]
    return tuple(m.to_hf(*parts).shape)


def save_pretrained(
    model: nn.Module,
    path: str | Path,
    max_shard_bytes: int | None = None,
    tokenizer: Any | None = None,
) -> None:
    """Write `model` as an HF checkpoint directory: config.json plus safetensors (sharded when
    larger than `max_shard_bytes`), and `tokenizer` as tokenizer.json (HF's format when the
    tokenizer can write it, so `transformers` and `--model PATH` both find it)."""
    directory = Path(path)
    converter = _converter_for_model(model)
    config = model.config
    hf_config = converter.names.config_to_hf(config)
    ours = model.state_dict()
    tensors = {
        m.hf_name: m.to_hf(*(ours[name] for name in m.ours))
        for m in converter.names.tensor_maps(config)
    }
    write_weights(directory, tensors, max_shard_bytes=max_shard_bytes)
    write_json(directory / "config.json", hf_config)
    if tokenizer is not None:
        if hasattr(tokenizer, "to_hf"):
            tokenizer.to_hf(directory / "tokenizer.json")
        else:  # a character tokenizer: our own format (HF has no equivalent)
            tokenizer.save(directory / "tokenizer.json")
