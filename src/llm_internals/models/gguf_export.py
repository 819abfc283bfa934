"""Export a Llama-family model (and its byte-level BPE tokenizer) as a GGUF file, the format
llama.cpp and the tools built on it load, written with the `gguf` package's GGUFWriter.

What llama.cpp expects, and what this writes:
- tensors under GGUF names (token_embd, blk.N.attn_q, ..., output_norm, output; see GGUF_NAMES),
  1-D tensors (norms) in F32, matrices in F32, F16 or Q8_0; a tied output head is left out
  (llama.cpp then uses token_embd);
- Q and K rows permuted: HF Llama rotates the two halves of each head (rotate_half), llama.cpp's
  RoPE rotates adjacent pairs (x0, x1), (x2, x3), ... . Within each head, row j of the first half
  and row j of the second half become rows 2j and 2j + 1 (llama.cpp's convert_hf_to_gguf.py does
  the same: reshape (heads, 2, d/2, in), swap axes 1 and 2). Attention scores are unchanged;
- metadata: general.architecture = llama, llama.context_length, llama.embedding_length,
  llama.block_count, llama.feed_forward_length, llama.attention.head_count(_kv),
  llama.rope.freq_base, llama.rope.dimension_count, llama.attention.layer_norm_rms_epsilon, and
  tokenizer.ggml.* (model "gpt2" = byte-level BPE: tokens, token types, merges, bos/eos ids).

Q8_0 (ggml): blocks of 32 values along a row, each block = an fp16 scale d = max|x| / 127 and
32 int8 q = round(x / d) (half away from zero, as ggml's roundf): 34 bytes per 32 weights.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from llm_internals.errors import LLMInternalsError
from llm_internals.models import hf_decoder

GGUF_TYPES = ("f32", "f16", "q8_0")
Q8_BLOCK = 32

# HF Llama tensor names (per block with {i}) -> GGUF names
GGUF_NAMES = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
    "model.layers.{i}.input_layernorm.weight": "blk.{i}.attn_norm.weight",
    "model.layers.{i}.self_attn.q_proj.weight": "blk.{i}.attn_q.weight",
    "model.layers.{i}.self_attn.k_proj.weight": "blk.{i}.attn_k.weight",
    "model.layers.{i}.self_attn.v_proj.weight": "blk.{i}.attn_v.weight",
    "model.layers.{i}.self_attn.o_proj.weight": "blk.{i}.attn_output.weight",
    "model.layers.{i}.post_attention_layernorm.weight": "blk.{i}.ffn_norm.weight",
    "model.layers.{i}.mlp.gate_proj.weight": "blk.{i}.ffn_gate.weight",
    "model.layers.{i}.mlp.up_proj.weight": "blk.{i}.ffn_up.weight",
    "model.layers.{i}.mlp.down_proj.weight": "blk.{i}.ffn_down.weight",
}


def gguf_name(hf_name: str) -> str:
    """The GGUF name of an HF Llama tensor name."""
    parts = hf_name.split(".")
    if len(parts) > 3 and parts[1] == "layers":
        template = ".".join([*parts[:2], "{i}", *parts[3:]])
        return GGUF_NAMES[template].format(i=parts[2])
    return GGUF_NAMES[hf_name]


def permute_for_rope_pairs(weight: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Rows of a q/k projection reordered from rotate-half to adjacent-pair RoPE, per head."""
    rows = weight.shape[0]
    return (
        weight.reshape(n_heads, 2, rows // n_heads // 2, *weight.shape[1:])
        .transpose(1, 2)
        .reshape(weight.shape)
    )


def _round_half_away(x: torch.Tensor) -> torch.Tensor:
    return torch.sign(x) * torch.floor(x.abs() + 0.5)


def quantize_q8_0(weight: torch.Tensor) -> np.ndarray:
    """ggml Q8_0 bytes, [rows, width / 32 * 34] uint8 (the layout GGUFWriter takes)."""
    rows, width = weight.shape
    blocks = weight.detach().float().reshape(rows, width // Q8_BLOCK, Q8_BLOCK)
    d = blocks.abs().amax(dim=-1, keepdim=True) / 127
    inverse = torch.where(d > 0, 1 / d, torch.zeros_like(d))
    q = _round_half_away(blocks * inverse).to(torch.int8)
    scale_bytes = d.to(torch.float16).view(torch.uint8)  # [rows, n, 2], little-endian fp16
    packed = torch.cat([scale_bytes, q.view(torch.uint8)], dim=-1)
    return packed.reshape(rows, -1).numpy()


def dequantize_q8_0(raw: np.ndarray, shape: tuple[int, int]) -> torch.Tensor:
    """Inverse of `quantize_q8_0`: d * q per block."""
    blocks = torch.from_numpy(np.ascontiguousarray(raw)).reshape(shape[0], -1, 2 + Q8_BLOCK)
    d = blocks[..., :2].contiguous().view(torch.float16).float()
    q = blocks[..., 2:].contiguous().view(torch.int8).float()
    return (q * d).reshape(shape)


def llama_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's tensors under GGUF names, q/k permuted for llama.cpp's RoPE."""
    config = model.config
    try:
        family = hf_decoder.export_family(config)
    except LLMInternalsError:
        family = None
    if family != "llama" or config.rope_scaling is not None:
        raise LLMInternalsError(
            f"GGUF export covers Llama-family models (RoPE, RMSNorm, gated MLP, no biases, no "
            f"RoPE scaling); this model is family {config.family!r}",
            hint="export a Llama-shaped model, or use `llm-internals quantize` for this one",
        )
    ours = model.state_dict()
    tensors = {}
    for m in hf_decoder.tensor_maps(config):
        tensor = m.to_hf(*(ours[name] for name in m.ours)).detach().float()
        if m.hf_name.endswith("q_proj.weight"):
            tensor = permute_for_rope_pairs(tensor, config.n_heads)
        elif m.hf_name.endswith("k_proj.weight"):
            tensor = permute_for_rope_pairs(tensor, config.n_kv_heads)
        tensors[gguf_name(m.hf_name)] = tensor
    return tensors


def export_gguf(
    model: nn.Module, tokenizer: Any, path: str | Path, out_type: str = "f16", on_tensor=None
) -> None:
    """Write `model` and `tokenizer` to the GGUF file `path` (atomically) as `out_type`."""
    import gguf

    if out_type not in GGUF_TYPES:
        raise LLMInternalsError(
            f"unknown GGUF type {out_type!r}", hint=f"--type takes one of {', '.join(GGUF_TYPES)}"
        )
    tensors = llama_tensors(model)
    if out_type == "q8_0":
        for name, t in tensors.items():
            if t.dim() == 2 and t.shape[1] % Q8_BLOCK:
                raise LLMInternalsError(
                    f"tensor {name!r} of shape {tuple(t.shape)}: Q8_0 needs a width divisible "
                    f"by {Q8_BLOCK}",
                    hint="use --type f16 or f32",
                )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        writer = gguf.GGUFWriter(tmp, "llama")
        _write_metadata(writer, model.config, out_type)
        _write_tokenizer(writer, tokenizer, model.config.vocab_size)
        for name, tensor in tensors.items():
            _add_tensor(writer, name, tensor, out_type)
            if on_tensor is not None:
                on_tensor(name)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _add_tensor(writer: Any, name: str, tensor: torch.Tensor, out_type: str) -> None:
    import gguf

    if tensor.dim() == 1 or out_type == "f32":
        writer.add_tensor(name, tensor.numpy().astype(np.float32))
    elif out_type == "f16":
        writer.add_tensor(name, tensor.numpy().astype(np.float16))
    else:
        writer.add_tensor(name, quantize_q8_0(tensor), raw_dtype=gguf.GGMLQuantizationType.Q8_0)


def _write_metadata(writer: Any, config: Any, out_type: str) -> None:
    import gguf

    writer.add_name("llm-internals export")
    writer.add_context_length(config.max_seq_len)
    writer.add_embedding_length(config.d_model)
    writer.add_block_count(config.n_layers)
    writer.add_feed_forward_length(config.d_ff)
    writer.add_head_count(config.n_heads)
    writer.add_head_count_kv(config.n_kv_heads)
    writer.add_key_length(config.head_dim)
    writer.add_value_length(config.head_dim)
    writer.add_rope_dimension_count(config.head_dim)
    writer.add_rope_freq_base(config.rope_theta)
    writer.add_layer_norm_rms_eps(config.norm_eps)
    writer.add_vocab_size(config.vocab_size)
    file_types = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                  "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}  # fmt: skip
    writer.add_file_type(file_types[out_type])


def _write_tokenizer(writer: Any, tokenizer: Any, vocab_size: int) -> None:
    """Byte-level BPE as llama.cpp's "gpt2" tokenizer model: the token strings in the byte-to-
    unicode alphabet (as HF tokenizer.json), merges as "a b", specials as control tokens."""
    import gguf

    from llm_internals.tokenizer.pretokenize import GPT2_PATTERN, GPT4_PATTERN

    if tokenizer is None or not hasattr(tokenizer, "to_hf"):
        raise LLMInternalsError(
            "GGUF export needs the model's byte-level BPE tokenizer (tokenizer.json)",
            hint="pass --tokenizer FILE",
        )
    hf = tokenizer.to_hf()
    by_id = {i: text for text, i in hf["model"]["vocab"].items()}
    specials = {t["id"] for t in hf["added_tokens"]}
    if len(by_id) > vocab_size:
        raise LLMInternalsError(f"tokenizer has {len(by_id)} tokens, the model {vocab_size}")
    tokens, types = [], []
    for i in range(vocab_size):  # ids the tokenizer does not use: unused padding entries
        tokens.append(by_id.get(i, f"[PAD{i}]"))
        types.append(gguf.TokenType.CONTROL if i in specials else
                     gguf.TokenType.NORMAL if i in by_id else gguf.TokenType.UNUSED)  # fmt: skip
    writer.add_tokenizer_model("gpt2")
    pre = {GPT2_PATTERN: "gpt-2", GPT4_PATTERN: "llama-bpe"}.get(tokenizer.pattern, "default")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges([" ".join(pair) for pair in hf["model"]["merges"]])
    if specials:
        eos = min(specials)
        writer.add_eos_token_id(eos)
        writer.add_bos_token_id(eos)
