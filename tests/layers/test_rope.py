"""RoPE against HF Llama's rotary code, a complex-number reference, and its defining property."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

from llm_internals.layers.rope import (
    RotaryEmbedding,
    apply_rope,
    half_to_interleaved,
    interleaved_to_half,
    rope_frequencies,
)


def _hf_config(head_dim=16, theta=10000.0, scaling=None):
    rope = {"rope_type": "default", "rope_theta": theta}
    if scaling:
        rope = {**scaling, "rope_theta": theta}
    return LlamaConfig(
        hidden_size=head_dim * 2,
        num_attention_heads=2,
        head_dim=head_dim,
        max_position_embeddings=4096,
        rope_parameters=rope,
    )


@pytest.mark.parametrize("theta", [10000.0, 500000.0])
def test_cos_sin_and_rotation_match_hf(theta):
    torch.manual_seed(0)
    head_dim = 16
    positions = torch.tensor([[0, 1, 2, 7, 100], [3, 4, 5, 6, 2047]])
    ours = RotaryEmbedding(head_dim, theta)
    hf = LlamaRotaryEmbedding(_hf_config(head_dim, theta))
    x = torch.randn(2, 3, 5, head_dim)
    cos, sin = ours(positions)
    hf_cos, hf_sin = hf(x, positions)
    assert (cos - hf_cos).abs().max() < 1e-6 and (sin - hf_sin).abs().max() < 1e-6
    q, k = torch.randn(2, 3, 5, head_dim), torch.randn(2, 3, 5, head_dim)
    hf_q, hf_k = apply_rotary_pos_emb(q, k, hf_cos, hf_sin)
    assert (apply_rope(q, cos, sin) - hf_q).abs().max() < 1e-5
    assert (apply_rope(k, cos, sin) - hf_k).abs().max() < 1e-5


def test_llama3_scaling_matches_hf():
    scaling = {
        "rope_type": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 64,
    }
    ours = RotaryEmbedding(64, 500000.0, scaling)
    hf_inv_freq, _ = ROPE_INIT_FUNCTIONS["llama3"](_hf_config(64, 500000.0, scaling), "cpu")
    assert torch.allclose(ours.inv_freq, hf_inv_freq, rtol=1e-6, atol=0)
    plain = rope_frequencies(64, 500000.0)
    assert torch.equal(ours.inv_freq[:3], plain[:3])  # wavelengths under 64 / 4 untouched
    assert not torch.equal(ours.inv_freq, plain)  # low ones scaled


@pytest.mark.parametrize("layout", ["half", "interleaved"])
def test_scores_depend_only_on_relative_position(layout):
    torch.manual_seed(1)
    head_dim = 32
    rope = RotaryEmbedding(head_dim, 10000.0, layout=layout).double()
    q, k = torch.randn(head_dim, dtype=torch.float64), torch.randn(head_dim, dtype=torch.float64)

    def score(m: int, n: int) -> float:
        cos, sin = rope(torch.tensor([[m, n]]), dtype=torch.float64)
        rotated_q = apply_rope(q.view(1, 1, 1, -1).expand(1, 1, 2, -1), cos, sin, layout)
        rotated_k = apply_rope(k.view(1, 1, 1, -1).expand(1, 1, 2, -1), cos, sin, layout)
        return float(rotated_q[0, 0, 0] @ rotated_k[0, 0, 1])

    for offset in (0, 1, 5, -3):
        values = [score(m, m - offset) for m in (3, 10, 50, 400)]
        assert max(values) - min(values) < 1e-12 * max(1.0, abs(values[0]))
    assert abs(score(10, 9) - score(10, 5)) > 1e-3  # a different distance scores differently


def test_rotation_preserves_length():
    torch.manual_seed(2)
    rope = RotaryEmbedding(16).double()
    x = torch.randn(1, 2, 6, 16, dtype=torch.float64)
    cos, sin = rope(torch.arange(6)[None] * 37, dtype=torch.float64)
    assert torch.allclose(apply_rope(x, cos, sin).norm(dim=-1), x.norm(dim=-1), atol=1e-12)


def test_interleaved_layout_matches_complex_multiplication():
    """Meta's original: view pairs as complex numbers and multiply by e^(i m w)."""
    torch.manual_seed(3)
    head_dim, positions = 8, torch.arange(5)
    x = torch.randn(1, 1, 5, head_dim, dtype=torch.float64)
    inv_freq = rope_frequencies(head_dim).double()
    rotors = torch.polar(
        torch.ones(5, head_dim // 2, dtype=torch.float64), positions[:, None] * inv_freq
    )
    as_complex = torch.view_as_complex(x.reshape(1, 1, 5, head_dim // 2, 2))
    expected = torch.view_as_real(as_complex * rotors).reshape(1, 1, 5, head_dim)
    cos, sin = RotaryEmbedding(head_dim, layout="interleaved")(positions[None], dtype=torch.float64)
    assert (apply_rope(x, cos, sin, "interleaved") - expected).abs().max() < 1e-6


def test_layout_converter_gives_identical_scores():
    torch.manual_seed(4)
    n_heads, head_dim, d = 2, 8, 12
    w_meta = torch.randn(n_heads * head_dim, d, dtype=torch.float64)
    w_hf = interleaved_to_half(w_meta, n_heads)
    assert torch.equal(half_to_interleaved(w_hf, n_heads), w_meta)
    x = torch.randn(1, 6, d, dtype=torch.float64)
    positions = torch.arange(6)[None]

    def scores(weight, layout):
        proj = (x @ weight.T).view(1, 6, n_heads, head_dim).transpose(1, 2)
        cos, sin = RotaryEmbedding(head_dim, layout=layout)(positions, dtype=torch.float64)
        rotated = apply_rope(proj, cos, sin, layout)
        return rotated @ rotated.transpose(-1, -2)

    assert (scores(w_meta, "interleaved") - scores(w_hf, "half")).abs().max() < 1e-10


@pytest.mark.parametrize(
    ("x_shape", "positions_shape"),
    [
        ((5, 16), (5,)),  # no batch, no heads
        ((2, 5, 16), (2, 5)),  # batch, no heads
        ((2, 3, 5, 16), (2, 5)),  # batch, heads (the model's layout)
        ((4, 2, 3, 5, 16), (4, 2, 5)),  # two batch dims, heads
        ((4, 2, 3, 5, 16), (5,)),  # one table broadcast over every batch row and head
    ],
)
def test_any_leading_dims_match_hf_row_by_row(x_shape, positions_shape):
    torch.manual_seed(1)
    head_dim = 16
    x = torch.randn(x_shape)
    positions = torch.randint(0, 100, positions_shape)
    cos, sin = RotaryEmbedding(head_dim)(positions)
    ours = apply_rope(x, cos, sin)
    # Reference: HF's rotation on each (1, heads, seq, d) slice with that slice's positions.
    hf_rope = LlamaRotaryEmbedding(_hf_config(head_dim, 10000.0))
    has_heads = len(x_shape) - len(positions_shape) == 2
    rows = x.reshape(-1, *x_shape[-3 if has_heads else -2 :])
    pos_rows = positions.expand(*x_shape[: len(x_shape) - (3 if has_heads else 2)], x_shape[-2])
    pos_rows = pos_rows.reshape(-1, x_shape[-2])
    for row, pos, got in zip(rows, pos_rows, ours.reshape(-1, *rows.shape[1:]), strict=True):
        hf_cos, hf_sin = hf_rope(row, pos[None])
        four_d = row if has_heads else row[None]
        expected, _ = apply_rotary_pos_emb(four_d[None], four_d[None], hf_cos, hf_sin)
        assert (got - expected.reshape(got.shape)).abs().max() < 1e-5
