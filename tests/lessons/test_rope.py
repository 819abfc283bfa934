"""The rope lesson's numbers, recomputed as complex rotations in float64 and with HF's
llama3 frequency scaling."""

import math

import pytest
import torch
import transformers
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

from llm_internals.explain.lessons import rope as lesson_module


@pytest.fixture(scope="module")
def steps():
    lesson = lesson_module.build()
    return {s.title: s.steps for s in lesson.sections}


def _rotate_complex(vector, position, theta=lesson_module.THETA):
    """HF 'half' layout: feature i pairs with i + d/2, as the complex number x_i + j x_{i+d/2}."""
    d = len(vector)
    half = d // 2
    out = [0.0] * d
    for i in range(half):
        w = theta ** (-2 * i / d)
        z = complex(vector[i], vector[i + half]) * complex(math.cos(position * w),
                                                           math.sin(position * w))  # fmt: skip
        out[i], out[i + half] = z.real, z.imag
    return out


def test_permutation_equivariance_without_positions(steps):
    shown = steps["Why positions"][0].values["max |attn(reversed x) reversed - attn(x)|"]
    torch.manual_seed(0)
    attention = lesson_module.MultiHeadAttention(8, n_heads=2)
    x = torch.randn(1, 5, 8)
    mha = torch.nn.MultiheadAttention(8, 2, bias=False, batch_first=True)
    with torch.no_grad():
        mha.in_proj_weight.copy_(torch.cat([attention.q_proj.weight, attention.k_proj.weight,
                                            attention.v_proj.weight]))  # fmt: skip
        mha.out_proj.weight.copy_(attention.o_proj.weight)
        out = mha(x, x, x, need_weights=False)[0]
        out_rev = mha(x.flip(1), x.flip(1), x.flip(1), need_weights=False)[0]
    assert shown < 1e-5
    assert (out_rev.flip(1) - out).abs().max().item() < 1e-5


def test_sinusoidal_and_pair_rotation(steps):
    table = steps["Older approaches"][0].values["sinusoidal_table(6, 8)"]
    for p in range(6):
        for i in range(4):
            angle = p / 10000 ** (2 * i / 8)
            assert math.isclose(table[p, 2 * i].item(), math.sin(angle), abs_tol=1e-6)
            assert math.isclose(table[p, 2 * i + 1].item(), math.cos(angle), abs_tol=1e-6)
    pair = steps["The 2D rotation"][0].values["rotated (1, 0)"]
    expected = torch.tensor([[math.cos(m), math.sin(m)] for m in range(6)])
    assert torch.allclose(pair, expected, atol=1e-6)


def test_query_rotation_and_lengths(steps):
    values = steps["Applying to Q and K"][0].values
    expected = torch.tensor([_rotate_complex(lesson_module.QUERY, m) for m in range(4)])
    assert torch.allclose(values["query at positions 0..3"], expected, atol=1e-5)
    length = math.sqrt(sum(v * v for v in lesson_module.QUERY))
    assert torch.allclose(values["lengths"], torch.full((4,), length), atol=1e-5)


def test_relative_position_dot_products(steps):
    table = steps["Why the dot product sees relative position"][0].values["dot products"]
    by_offset = {}
    for m, n, offset, dot in table.rows:
        q = _rotate_complex(lesson_module.QUERY, m)
        k = _rotate_complex(lesson_module.KEY, n)
        assert offset == m - n
        assert math.isclose(dot, sum(a * b for a, b in zip(q, k, strict=True)), abs_tol=1e-4)
        by_offset.setdefault(offset, []).append(dot)
    assert len(by_offset[3]) == 4 and max(by_offset[3]) - min(by_offset[3]) < 1e-4
    assert len({round(v[0], 3) for v in by_offset.values()}) == len(by_offset)


def test_numeric_example(steps):
    v = steps["A small numeric example"][0].values
    assert torch.allclose(v["w"], torch.tensor([1.0, 0.01]))
    angles = [2 * 1.0, 2 * 0.01, 2 * 1.0, 2 * 0.01]
    assert torch.allclose(v["cos"], torch.tensor([math.cos(a) for a in angles]), atol=1e-6)
    assert torch.allclose(v["sin"], torch.tensor([math.sin(a) for a in angles]), atol=1e-6)
    expected = _rotate_complex(lesson_module.QUERY, lesson_module.EXAMPLE_POSITION)
    assert torch.allclose(v["q'"], torch.tensor(expected), atol=1e-5)


def test_theta_table(steps):
    rows = {r[0]: r for r in steps["Real models' theta"][0].values["rope_theta"].rows}
    published = {"Llama-2-7B": (10000.0, 128), "Mistral-7B-v0.1": (10000.0, 128),
                 "SmolLM-135M": (10000.0, 64), "Llama-3-8B": (500000.0, 128),
                 "Qwen2.5-7B": (1e6, 128), "Qwen3-0.6B": (1e6, 128)}  # fmt: skip
    for name, (theta, d) in published.items():
        _, shown_theta, shown_d, wavelength = rows[name]
        assert (shown_theta, shown_d) == (theta, d)
        assert math.isclose(wavelength, 2 * math.pi * theta ** ((d - 2) / d), rel_tol=1e-5)
    config = transformers.LlamaConfig(
        hidden_size=4096, num_attention_heads=32, rope_theta=500000.0,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                      "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
    )  # fmt: skip
    inv_freq, _ = ROPE_INIT_FUNCTIONS["llama3"](config, "cpu")
    shown = rows["Llama-3.1-8B (llama3 scaling x8)"][3]
    assert math.isclose(shown, 2 * math.pi / float(inv_freq.min()), rel_tol=1e-5)


def test_summary_checks_match_complex_rotations(steps):
    rows = {r[0]: r[1] for r in steps["Summary"][0].values["checks"].rows}
    q, k = lesson_module.QUERY, lesson_module.KEY
    far = lesson_module.FAR_POSITION
    length = math.sqrt(sum(v * v for v in q))
    assert math.isclose(rows["|q| at position 0"], length, rel_tol=1e-6)
    assert math.isclose(rows[f"|q| at position {far:,}"], math.hypot(*_rotate_complex(q, far)),
                        rel_tol=1e-6)  # fmt: skip
    offset = lesson_module.SUMMARY_OFFSET
    pairs = [(m, n) for m, n in lesson_module.PAIRS if m - n == offset]
    dots = [sum(a * b for a, b in zip(_rotate_complex(q, m), _rotate_complex(k, n), strict=True))
            for m, n in pairs]  # fmt: skip
    assert rows[f"pairs with offset {offset}"] == len(pairs) >= 3
    assert abs(rows["spread of their q . k (max - min)"]) < 1e-4
    assert max(dots) - min(dots) < 1e-9
    assert rows["learned parameters in RotaryEmbedding"] == 0
