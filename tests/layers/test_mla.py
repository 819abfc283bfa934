"""Multi-head Latent Attention against transformers' DeepseekV3Attention (weights copied in), the
absorbed mode against the naive one, cached decoding against the full forward, config errors."""

from __future__ import annotations

import pytest
import torch
from transformers import DeepseekV3Config
from transformers.models.deepseek_v3.modeling_deepseek_v3 import (
    DeepseekV3Attention,
    DeepseekV3RotaryEmbedding,
    apply_rotary_pos_emb,
    apply_rotary_pos_emb_interleave,
)

from llm_internals.errors import LLMInternalsError
from llm_internals.layers.mla import MLAConfig, MultiHeadLatentAttention, kv_values_per_token

# Odd, distinct widths so a swapped split or reshape cannot pass by accident.
SHAPE = dict(
    hidden_size=40,
    num_attention_heads=3,
    kv_lora_rank=12,
    qk_nope_head_dim=6,
    qk_rope_head_dim=4,
    v_head_dim=5,
    rope_theta=500.0,
)


def ours_and_hf(q_lora_rank: int | None, rope_interleave: bool = True):
    torch.manual_seed(0)
    hf_config = DeepseekV3Config(
        **SHAPE,
        num_key_value_heads=SHAPE["num_attention_heads"],
        q_lora_rank=q_lora_rank,
        rope_interleave=rope_interleave,
        attn_implementation="eager",
    )
    hf = DeepseekV3Attention(hf_config, layer_idx=0).eval()
    for name, param in hf.named_parameters():  # RMSNorm weights start at 1: make them matter
        param.data.normal_(1.0 if "layernorm" in name else 0.0, 0.3)
    ours = MultiHeadLatentAttention(
        MLAConfig(**SHAPE, q_lora_rank=q_lora_rank, rope_interleave=rope_interleave)
    )
    ours.load_state_dict(hf.state_dict())
    return ours, hf, DeepseekV3RotaryEmbedding(hf_config)


@pytest.mark.parametrize("rope_interleave", [True, False])
@pytest.mark.parametrize("q_lora_rank", [None, 10])
def test_matches_transformers(q_lora_rank, rope_interleave):
    ours, hf, hf_rotary = ours_and_hf(q_lora_rank, rope_interleave)
    batch, seq = 2, 7
    x = torch.randn(batch, seq, SHAPE["hidden_size"])
    positions = torch.arange(seq).expand(batch, seq)
    cos, sin = hf_rotary(x, positions)
    our_cos, our_sin = ours.rotary(positions)
    torch.testing.assert_close(our_cos, cos, atol=0, rtol=0)
    torch.testing.assert_close(our_sin, sin, atol=0, rtol=0)
    causal = torch.full((seq, seq), float("-inf")).triu(1)[None, None]
    with torch.no_grad():
        expected, _ = hf(x, (cos, sin), causal)
        for mode in ("naive", "absorbed"):
            got, (c_kv, k_rope) = ours(x, mode=mode)
            torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    # The cached rope key is the very tensor HF caches (same layout, not just the same scores).
    k_before = hf.kv_a_proj_with_mqa(x)[..., SHAPE["kv_lora_rank"] :][:, None]
    hf_rope = apply_rotary_pos_emb_interleave if rope_interleave else apply_rotary_pos_emb
    _, hf_k_rope = hf_rope(k_before, k_before, cos, sin)
    torch.testing.assert_close(k_rope, hf_k_rope[:, 0], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(
        c_kv, hf.kv_a_layernorm(hf.kv_a_proj_with_mqa(x)[..., : SHAPE["kv_lora_rank"]])
    )


def test_is_causal():
    ours, _, _ = ours_and_hf(10)
    x = torch.randn(1, 6, SHAPE["hidden_size"])
    changed = x.clone()
    changed[:, 4:] += 1.0
    with torch.no_grad():
        before, after = ours(x)[0], ours(changed)[0]
    torch.testing.assert_close(before[:, :4], after[:, :4], atol=0, rtol=0)
    assert not torch.allclose(before[:, 4:], after[:, 4:])


@pytest.mark.parametrize("q_lora_rank", [None, 10])
def test_absorbed_equals_naive_fp64(q_lora_rank):
    ours, _, _ = ours_and_hf(q_lora_rank)
    ours.double()
    x = torch.randn(2, 9, SHAPE["hidden_size"], dtype=torch.float64)
    with torch.no_grad():
        naive, (c_naive, r_naive) = ours(x, mode="naive")
        absorbed, (c_abs, r_abs) = ours(x, mode="absorbed")
    torch.testing.assert_close(absorbed, naive, atol=1e-12, rtol=0)
    torch.testing.assert_close(c_abs, c_naive, atol=0, rtol=0)
    torch.testing.assert_close(r_abs, r_naive, atol=0, rtol=0)


@pytest.mark.parametrize("mode", ["naive", "absorbed"])
def test_cached_decoding_equals_full_forward(mode):
    ours, _, _ = ours_and_hf(10)
    ours.double()
    x = torch.randn(2, 8, SHAPE["hidden_size"], dtype=torch.float64)
    with torch.no_grad():
        full, full_cache = ours(x, mode=mode)
        prefill, past = ours(x[:, :5], mode=mode)  # a prompt, then one token at a time
        steps = [prefill]
        for t in range(5, 8):
            out, past = ours(x[:, t : t + 1], past=past, mode=mode)
            steps.append(out)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-12, rtol=0)
    torch.testing.assert_close(past[0], full_cache[0], atol=1e-12, rtol=0)
    torch.testing.assert_close(past[1], full_cache[1], atol=1e-12, rtol=0)


def test_kv_values_per_token_deepseek_v3():
    v3 = MLAConfig(
        hidden_size=7168,
        num_attention_heads=128,
        q_lora_rank=1536,
        kv_lora_rank=512,
        qk_nope_head_dim=128,
        qk_rope_head_dim=64,
        v_head_dim=128,
    )
    assert kv_values_per_token(v3) == 576
    mha = 2 * 128 * 128  # a key and a value of 128 values for each of 128 heads
    assert mha // kv_values_per_token(v3) == 56  # 56.9x smaller


@pytest.mark.parametrize(
    "field, value",
    [
        ("kv_lora_rank", 41),
        ("q_lora_rank", 100),
        ("qk_rope_head_dim", 0),
        ("qk_rope_head_dim", 3),
        ("v_head_dim", -1),
        ("num_attention_heads", 0),
        ("q_lora_rank", 0),
    ],
)
def test_config_errors_name_field_and_value(field, value):
    with pytest.raises(LLMInternalsError) as error:
        MLAConfig(**{**SHAPE, field: value})
    assert field in error.value.message and str(value) in error.value.message
    assert error.value.hint
