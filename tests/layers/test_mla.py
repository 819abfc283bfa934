"""Multi-head Latent Attention against transformers' DeepseekV3Attention (weights copied in), the
absorbed mode against the naive one, cached decoding (a latent ContiguousKVCache) against the
full forward, torch's fused kernel against the written-out steps, config errors."""

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

from llm_internals.adapters.lora import LoraLinear, LoraSettings
from llm_internals.errors import LLMInternalsError
from llm_internals.inference.kv_cache import ContiguousKVCache
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
    cache = latent_cache(batch, seq)
    with torch.no_grad():
        expected, _ = hf(x, (cos, sin), causal)
        for mode in ("naive", "absorbed"):
            ours.mode = mode
            cache.reset()
            got = ours(x, cache=cache)
            torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    c_kv, k_rope = cache.keys[0][:, 0].split([SHAPE["kv_lora_rank"], SHAPE["qk_rope_head_dim"]], -1)
    # The cached rope key is the very tensor HF caches (same layout, not just the same scores).
    k_before = hf.kv_a_proj_with_mqa(x)[..., SHAPE["kv_lora_rank"] :][:, None]
    hf_rope = apply_rotary_pos_emb_interleave if rope_interleave else apply_rotary_pos_emb
    _, hf_k_rope = hf_rope(k_before, k_before, cos, sin)
    torch.testing.assert_close(k_rope, hf_k_rope[:, 0], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(
        c_kv, hf.kv_a_layernorm(hf.kv_a_proj_with_mqa(x)[..., : SHAPE["kv_lora_rank"]])
    )


def latent_cache(batch: int, max_len: int, dtype=torch.float32) -> ContiguousKVCache:
    """One layer of the latent layout: keys [c_kv ; k_rope], values the first kv_lora_rank."""
    width = SHAPE["kv_lora_rank"] + SHAPE["qk_rope_head_dim"]
    return ContiguousKVCache(1, batch, 1, max_len, width, dtype=dtype,
                             latent_value_dim=SHAPE["kv_lora_rank"])  # fmt: skip


@pytest.mark.parametrize("mode", ["naive", "absorbed"])
def test_is_causal(mode):
    ours, _, _ = ours_and_hf(10)
    ours.mode = mode
    x = torch.randn(1, 6, SHAPE["hidden_size"])
    changed = x.clone()
    changed[:, 4:] += 1.0
    with torch.no_grad():
        before, after = ours(x), ours(changed)
    torch.testing.assert_close(before[:, :4], after[:, :4], atol=0, rtol=0)
    assert not torch.allclose(before[:, 4:], after[:, 4:])


@pytest.mark.parametrize("q_lora_rank", [None, 10])
def test_absorbed_equals_naive_fp64(q_lora_rank):
    ours, _, _ = ours_and_hf(q_lora_rank)
    ours.double()
    x = torch.randn(2, 9, SHAPE["hidden_size"], dtype=torch.float64)
    with torch.no_grad():
        ours.mode = "naive"
        naive = ours(x)
        ours.mode = "absorbed"
        absorbed = ours(x)
    torch.testing.assert_close(absorbed, naive, atol=1e-12, rtol=0)


@pytest.mark.parametrize("mode", ["auto", "naive", "absorbed"])
def test_cached_decoding_equals_full_forward(mode):
    ours, _, _ = ours_and_hf(10)
    ours.double()
    ours.mode = mode
    x = torch.randn(2, 8, SHAPE["hidden_size"], dtype=torch.float64)
    full_cache, cache = latent_cache(2, 8, torch.float64), latent_cache(2, 8, torch.float64)
    with torch.no_grad():
        full = ours(x, cache=full_cache)
        steps = [ours(x[:, :5], cache=cache)]  # a prompt, then one token at a time
        for t in range(5, 8):
            steps.append(ours(x[:, t : t + 1], cache=cache))
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-12, rtol=0)
    torch.testing.assert_close(cache.keys[0], full_cache.keys[0], atol=1e-12, rtol=0)


@pytest.mark.parametrize("with_mask", [False, True])
def test_fused_kernel_equals_written_out_steps(with_mask):
    ours, _, _ = ours_and_hf(10)
    ours.double()
    x = torch.randn(2, 7, SHAPE["hidden_size"], dtype=torch.float64)
    mask = None
    if with_mask:  # row 0 left-padded by two: its first queries see no key at all
        mask = torch.ones(2, 1, 7, 7, dtype=torch.bool).tril()
        mask[0, :, :, :2] = False
    with torch.no_grad():
        for mode in ("naive", "absorbed"):
            ours.mode, ours.use_sdpa = mode, False
            expected = ours(x, mask=mask)
            ours.use_sdpa = True
            torch.testing.assert_close(ours(x, mask=mask), expected, atol=1e-12, rtol=0)


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


def test_absorbed_mode_uses_the_effective_weight_of_a_wrapped_kv_b_proj():
    """A LoRA-wrapped (or quantised) kv_b_proj has no plain weight: the absorbed mode must fold
    what the layer computes, base plus adapter, exactly as the naive mode applies it."""
    ours, _, _ = ours_and_hf(10)
    ours.kv_b_proj = LoraLinear(ours.kv_b_proj)
    ours.kv_b_proj.add_adapter("a", LoraSettings(r=2, alpha=4))
    torch.nn.init.normal_(ours.kv_b_proj.lora_B["a"].weight)  # B starts at 0: make it count
    ours.double().eval()
    x = torch.randn(2, 6, SHAPE["hidden_size"], dtype=torch.float64)
    with torch.no_grad():
        ours.mode = "naive"
        naive = ours(x)
        ours.mode = "absorbed"
        torch.testing.assert_close(ours(x), naive, atol=1e-12, rtol=0)
