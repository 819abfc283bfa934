"""GGUF export against the gguf package itself: Q8_0 bytes equal gguf.quants', tensor names equal
gguf's TensorNameMap, the file reads back with GGUFReader (tensors equal after dequantisation,
the metadata llama.cpp needs), and the Q/K permutation leaves RoPE attention scores unchanged."""

from __future__ import annotations

import gguf
import numpy as np
import pytest
import torch
from gguf.quants import dequantize, quantize

from llm_internals.cli import main
from llm_internals.errors import LLMInternalsError
from llm_internals.models.checkpoint import save_checkpoint
from llm_internals.models.config import ModelConfig
from llm_internals.models.decoder import DecoderLM
from llm_internals.models.gguf_export import (
    GGUF_NAMES,
    dequantize_q8_0,
    export_gguf,
    gguf_name,
    llama_tensors,
    permute_for_rope_pairs,
    quantize_q8_0,
)
from llm_internals.tokenizer import train_bpe

Q8_0 = gguf.GGMLQuantizationType.Q8_0
TEXT = "To be, or not to be, that is the question: whether 'tis nobler in the mind. " * 6


@pytest.fixture(scope="module")
def tokenizer():
    return train_bpe(TEXT, 300)


@pytest.fixture(scope="module")
def model(tokenizer):
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=320, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2,
                         d_ff=96, max_seq_len=128, norm="rmsnorm", norm_eps=1e-5, ffn="gated",
                         activation="silu", position="rope", rope_theta=5000.0,
                         tie_embeddings=False)  # fmt: skip
    return DecoderLM(config).eval()


def test_q8_0_bytes_equal_gguf_quants():
    torch.manual_seed(0)
    w = torch.randn(6, 128)
    w[0, :32] = torch.arange(32) - 15.5  # d = 127/127... ties at .5 after scaling
    w[1, :32] = torch.tensor([127.0, 2.5, -2.5, 0.5, -0.5] + [1.5] * 27)  # d = 1: exact halves
    w[2, 32:64] = 0.0  # a zero block
    ours = quantize_q8_0(w)
    reference = quantize(w.numpy(), Q8_0)
    assert ours.dtype == np.uint8 and ours.shape == reference.shape == (6, 4 * 34)
    assert np.array_equal(ours, reference)
    np.testing.assert_array_equal(
        dequantize_q8_0(ours, (6, 128)).numpy(), dequantize(reference, Q8_0)
    )


def test_gguf_names_are_ggufs_own_mapping():
    name_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, 3)
    for template in GGUF_NAMES:
        hf = template.format(i=2)
        assert gguf_name(hf) == name_map.get_name(hf, try_suffixes=(".weight",))


def _rope_half(x: torch.Tensor, positions: torch.Tensor, theta: float) -> torch.Tensor:
    """HF rotate_half RoPE on [..., T, d]: pairs (i, i + d/2)."""
    d = x.shape[-1]
    freqs = theta ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    angle = positions[:, None].double() * freqs
    cos, sin = torch.cat([angle.cos()] * 2, -1), torch.cat([angle.sin()] * 2, -1)
    rotated = torch.cat([-x[..., d // 2 :], x[..., : d // 2]], -1)
    return x * cos + rotated * sin


def _rope_pairs(x: torch.Tensor, positions: torch.Tensor, theta: float) -> torch.Tensor:
    """llama.cpp's (ggml "normal") RoPE: adjacent pairs (2i, 2i + 1) rotated by angle i."""
    d = x.shape[-1]
    freqs = theta ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    angle = positions[:, None].double() * freqs
    even, odd = x[..., 0::2], x[..., 1::2]
    out = torch.stack(
        [even * angle.cos() - odd * angle.sin(), even * angle.sin() + odd * angle.cos()], -1
    )
    return out.flatten(-2)


def test_permutation_keeps_rope_attention_scores():
    torch.manual_seed(1)
    heads, head_dim, width, steps = 4, 16, 32, 7
    w_q, w_k = (
        torch.randn(heads * head_dim, width, dtype=torch.float64),
        torch.randn(heads * head_dim, width, dtype=torch.float64),
    )
    x = torch.randn(steps, width, dtype=torch.float64)
    pos = torch.arange(steps)

    def scores(wq, wk, rope):
        q = (x @ wq.T).reshape(steps, heads, head_dim).transpose(0, 1)
        k = (x @ wk.T).reshape(steps, heads, head_dim).transpose(0, 1)
        return rope(q, pos, 100.0) @ rope(k, pos, 100.0).transpose(-1, -2)

    hf = scores(w_q, w_k, _rope_half)
    permuted = scores(
        permute_for_rope_pairs(w_q, heads), permute_for_rope_pairs(w_k, heads), _rope_pairs
    )
    torch.testing.assert_close(permuted, hf, atol=1e-10, rtol=1e-10)
    unpermuted = scores(w_q, w_k, _rope_pairs)  # without the permutation the scores differ
    assert (unpermuted - hf).abs().max() > 1e-2


def _field(reader: gguf.GGUFReader, key: str):
    field = reader.fields[key]
    if field.types[0] == gguf.GGUFValueType.STRING:
        return bytes(field.parts[field.data[0]]).decode()
    if field.types[0] == gguf.GGUFValueType.ARRAY:
        if field.types[-1] == gguf.GGUFValueType.STRING:
            return [bytes(field.parts[i]).decode() for i in field.data]
        return [field.parts[i][0].item() for i in field.data]
    return field.parts[field.data[0]][0].item()


@pytest.mark.parametrize("out_type", ["f32", "f16", "q8_0"])
def test_round_trip_through_ggufs_reader(tmp_path, model, tokenizer, out_type):
    path = tmp_path / "model.gguf"
    export_gguf(model, tokenizer, path, out_type)
    reader = gguf.GGUFReader(path)
    expected = llama_tensors(model)
    read = {t.name: t for t in reader.tensors}
    assert set(read) == set(expected) and "output.weight" in read
    for name, tensor in expected.items():
        entry = read[name]
        values = torch.from_numpy(dequantize(entry.data, entry.tensor_type).copy()).reshape(
            tensor.shape
        )
        assert list(entry.shape) == list(reversed(tensor.shape))  # ggml lists the row length first
        if tensor.dim() == 1 or out_type == "f32":
            assert entry.tensor_type == gguf.GGMLQuantizationType.F32
            assert torch.equal(values, tensor)
        elif out_type == "f16":
            assert torch.equal(values, tensor.half().float())
        else:
            assert entry.tensor_type == Q8_0
            assert torch.equal(values, dequantize_q8_0(quantize_q8_0(tensor), tuple(tensor.shape)))
            assert (values - tensor).abs().max() <= tensor.abs().max() / 127
    if out_type == "f32":  # each head's rows interleaved: first-half row j -> 2j, second -> 2j+1
        attn = model.blocks[1].attn
        for name, hf_weight, heads in [
            ("attn_q", attn.q_proj.weight, 4),
            ("attn_k", attn.k_proj.weight, 2),
        ]:
            stored = torch.from_numpy(read[f"blk.1.{name}.weight"].data.copy()).reshape(
                heads, 16, 64
            )
            original = hf_weight.detach().reshape(heads, 16, 64)
            assert torch.equal(stored[:, 0::2], original[:, :8])
            assert torch.equal(stored[:, 1::2], original[:, 8:])
    config = model.config
    assert _field(reader, "general.architecture") == "llama"
    assert _field(reader, "llama.context_length") == config.max_seq_len
    assert _field(reader, "llama.embedding_length") == config.d_model
    assert _field(reader, "llama.block_count") == config.n_layers
    assert _field(reader, "llama.feed_forward_length") == config.d_ff
    assert _field(reader, "llama.attention.head_count") == config.n_heads
    assert _field(reader, "llama.attention.head_count_kv") == config.n_kv_heads
    assert _field(reader, "llama.rope.freq_base") == config.rope_theta
    assert _field(reader, "llama.attention.layer_norm_rms_epsilon") == pytest.approx(
        config.norm_eps
    )
    assert _field(reader, "tokenizer.ggml.model") == "gpt2"
    hf = tokenizer.to_hf()
    tokens = _field(reader, "tokenizer.ggml.tokens")
    assert len(tokens) == config.vocab_size
    assert {t: i for i, t in enumerate(tokens) if i < len(hf["model"]["vocab"])} == hf["model"][
        "vocab"
    ]
    assert _field(reader, "tokenizer.ggml.merges") == [" ".join(m) for m in hf["model"]["merges"]]


def test_export_command_and_bad_input(tmp_path, model, tokenizer):
    folder = tmp_path / "model"
    save_checkpoint(model, folder)
    tokenizer.save(folder / "tokenizer.json")
    out = tmp_path / "model-q8.gguf"
    assert main(["export-gguf", "--model", str(folder), "--out", str(out), "--type", "q8_0"]) == 0
    assert gguf.GGUFReader(out).tensors[0].name
    gpt2 = DecoderLM(ModelConfig(vocab_size=320, d_model=32, n_layers=1, n_heads=2,
                                 position="learned", norm="layernorm", ffn="mlp"))  # fmt: skip
    with pytest.raises(LLMInternalsError, match="Llama-family"):
        export_gguf(gpt2, tokenizer, tmp_path / "no.gguf")
    assert not (tmp_path / "no.gguf").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "model-q8.gguf"]
