"""The mla lesson's numbers, recomputed by hand: the latent from the layer's weights (RMSNorm and
RoPE written out), the fold identity and its failure under RoPE with explicit rotation matrices,
the naive scores from q and the expanded keys, and the cache sizes from the configs."""

from __future__ import annotations

import io
import json
import math

import pytest
import torch
from rich.console import Console

from llm_internals.explain.lessons import mla as lesson_module
from llm_internals.explain.render import render_json, render_markdown, render_terminal

OUTLINE = [
    "Why latent attention",
    "The compression",
    "Decoupled RoPE",
    "Absorbed weights",
    "Cache bytes against MHA and GQA",
]
MLA = lesson_module.MLA
D_C, D_R, D_NOPE, D_V = (MLA[k] for k in ("kv_lora_rank", "qk_rope_head_dim",
                                          "qk_nope_head_dim", "v_head_dim"))  # fmt: skip
HEADS, TOKENS = lesson_module.HEADS, lesson_module.TOKENS


@pytest.fixture(scope="module")
def lesson():
    return lesson_module.build()


@pytest.fixture(scope="module")
def steps(lesson):
    return {s.title: s.steps for s in lesson.sections}


def test_every_outline_bullet_is_a_section_in_order(lesson):
    assert [s.title for s in lesson.sections] == OUTLINE


def test_deepseek_v3_cache_sizes_from_its_config(steps):
    rows = steps["Why latent attention"][0].values["KV cache"].rows
    # DeepSeek-V3 config.json: 128 heads, kv_lora_rank 512, qk_rope_head_dim 64, head dims 128
    expected = {"MHA, 128 heads": 2 * 128 * 128, "GQA, 8 KV heads": 2 * 8 * 128,
                "MQA": 2 * 128, "MLA": 512 + 64}  # fmt: skip
    for name, values, per_token, ratio in rows:
        assert values == expected[name] and per_token == values * 61 * 2
        assert ratio == values / 576
    assert rows[0][3] == pytest.approx(56.9, abs=0.05)  # the spec's "57x"


def _rotation(positions: torch.Tensor, dim: int, theta: float = 10000.0) -> torch.Tensor:
    """Explicit (len, dim, dim) RoPE matrices, "half" layout: feature i pairs with i + dim/2."""
    half = dim // 2
    inv_freq = 1.0 / theta ** (torch.arange(half, dtype=torch.float64) * 2 / dim)
    rotations = torch.zeros(len(positions), dim, dim, dtype=torch.float64)
    for n, p in enumerate(positions.tolist()):
        for i in range(half):
            c, s = math.cos(p * inv_freq[i]), math.sin(p * inv_freq[i])
            rotations[n, i, i], rotations[n, i, i + half] = c, -s
            rotations[n, i + half, i], rotations[n, i + half, i + half] = s, c
    return rotations


def _block0_input_and_attention():
    model = lesson_module.mla_model()
    attn = model.blocks[0].attn
    seen = {}
    attn.register_forward_hook(lambda m, args, kwargs, out: seen.update(x=args[0]),
                               with_kwargs=True)  # fmt: skip
    with torch.no_grad():
        model(lesson_module.token_ids())
    return seen["x"][0].double(), attn


def _latent_by_hand(x, attn):
    w = {name: p.detach().double() for name, p in attn.named_parameters()}
    c_kv, k_rope = (x @ w["kv_a_proj_with_mqa.weight"].T).split([D_C, D_R], dim=-1)
    c_kv = c_kv / torch.sqrt(c_kv.square().mean(-1, keepdim=True) + 1e-6)
    c_kv = c_kv * w["kv_a_layernorm.weight"]
    k_rope = torch.cat((k_rope[:, 0::2], k_rope[:, 1::2]), -1)  # DeepSeek's interleaved pairs
    k_rope = (_rotation(torch.arange(TOKENS), D_R) @ k_rope[..., None])[..., 0]
    return c_kv, k_rope, w


def test_compression_shapes_and_latent_by_hand(steps):
    values = steps["The compression"][0].values
    shapes = dict(values["shapes"].rows)
    assert shapes["W_DKV (kv_a_proj_with_mqa)"] == str((D_C + D_R, lesson_module.D_MODEL))
    assert shapes["W_UKV (kv_b_proj)"] == str((HEADS * (D_NOPE + D_V), D_C))
    x, attn = _block0_input_and_attention()
    c_kv, k_rope, _ = _latent_by_hand(x, attn)
    shown = values["cached latent [c_kv ; k_rope]"].double()
    assert shown.shape == (TOKENS, D_C + D_R)
    assert torch.allclose(shown[:, :D_C], c_kv, atol=1e-5)
    assert torch.allclose(shown[:, D_C:], k_rope, atol=1e-5)


def _shown_float(values, name):
    return float(values[name])


def test_decoupled_rope_numbers_by_hand(steps):
    values = steps["Decoupled RoPE"][0].values
    x, attn = _block0_input_and_attention()
    c_kv, _, w = _latent_by_hand(x, attn)
    w_uk = w["kv_b_proj.weight"].view(HEADS, D_NOPE + D_V, D_C)[0, :D_NOPE]
    q = torch.randn(D_NOPE, generator=torch.Generator().manual_seed(1)).double()
    k_nope = c_kv @ w_uk.T
    absorbed = c_kv @ (w_uk.T @ q)
    assert _shown_float(values, "max |q . k_nope_j - (W_UK^T q) . c_j|") < 1e-5
    assert (k_nope @ q - absorbed).abs().max() < 1e-12  # the identity, exactly in fp64
    i = TOKENS - 1
    rotations = _rotation(torch.arange(TOKENS), D_NOPE)
    rotated = torch.einsum("d,jde,je->j", rotations[i] @ q, rotations, k_nope)
    shown = _shown_float(values, "max |(R_i q) . (R_j k_nope_j) - (W_UK^T q) . c_j|")
    assert shown == pytest.approx(float((rotated - absorbed).abs().max()), rel=0.06)
    assert shown > 1e-2  # RoPE breaks the fold
    folds = _rotation(torch.arange(TOKENS) - i, D_NOPE) @ w_uk  # R_(j-i) W_UK
    change = float((folds - w_uk).abs().max())
    assert _shown_float(values, "max change of R_(j-i) W_UK over j") == pytest.approx(
        change, rel=0.06
    )
    # R_i^T R_j = R_(j-i): the fold matrix is what the rotated score multiplies c_j by
    direct = torch.einsum("d,jde,je->j", q, folds, c_kv)
    assert torch.allclose(direct, rotated, atol=1e-10)


def test_naive_scores_by_hand_and_absorbed_equal(steps):
    values = steps["Absorbed weights"][0].values
    x, attn = _block0_input_and_attention()
    c_kv, k_rope, w = _latent_by_hand(x, attn)
    q = (x @ w["q_proj.weight"].T).view(TOKENS, HEADS, D_NOPE + D_R)[:, 0]  # head 0
    q_nope, q_rope = q.split([D_NOPE, D_R], dim=-1)
    q_rope = torch.cat((q_rope[:, 0::2], q_rope[:, 1::2]), -1)
    q_rope = (_rotation(torch.arange(TOKENS), D_R) @ q_rope[..., None])[..., 0]
    kv = (c_kv @ w["kv_b_proj.weight"].T).view(TOKENS, HEADS, D_NOPE + D_V)[:, 0]
    k = torch.cat((kv[:, :D_NOPE], k_rope), dim=-1)
    scores = torch.cat((q_nope, q_rope), -1) @ k.T / math.sqrt(D_NOPE + D_R)
    assert torch.allclose(values["scaled scores, head 0, naive"].double(), scores, atol=1e-6)
    assert float(values["max |naive - absorbed| scores"]) < 1e-6
    assert float(values["max |naive - absorbed| logits"]) < 1e-5


def test_cache_bytes_from_the_configs(steps):
    rows = steps["Cache bytes against MHA and GQA"][0].values["KV cache (measured)"].rows
    head_dim, layers = lesson_module.HEAD_DIM, 2
    expected = [2 * HEADS * head_dim, 2 * lesson_module.GQA_KV_HEADS * head_dim, D_C + D_R]
    for (_, values, per_token, total), want in zip(rows, expected, strict=True):
        assert (values, per_token, total) == (want, 4 * want, 4 * want * TOKENS * layers)


def test_renders_in_80_columns_markdown_and_json(lesson):
    console = Console(file=io.StringIO(), width=80, color_system=None)
    render_terminal(lesson, console)
    assert max(len(line) for line in console.file.getvalue().splitlines()) <= 80
    headings = [line for line in render_markdown(lesson).splitlines() if line.startswith("## ")]
    assert headings == [f"## {i}. {t}" for i, t in enumerate(OUTLINE, 1)]
    assert [s["title"] for s in json.loads(render_json(lesson))["sections"]] == OUTLINE
