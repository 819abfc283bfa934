"""A DecoderLM with `config.mla`: Multi-head Latent Attention in every block, the contiguous cache
keeping only the latent [c_kv ; k_rope], cached decoding == the full forward (left padding
included), greedy generate with the cache == without it, and the checkpoint round trip."""

from __future__ import annotations

import pytest
import torch

from llm_internals.errors import LLMInternalsError
from llm_internals.inference.generate import generate
from llm_internals.inference.kv_cache import ContiguousKVCache
from llm_internals.inference.kv_layout import kv_layout
from llm_internals.inference.paged.paged_cache import PagedKVCache
from llm_internals.inference.speculative.stats import SpeculativeStats
from llm_internals.layers.mla import MultiHeadLatentAttention
from llm_internals.models import DecoderLM, ModelConfig
from llm_internals.models.checkpoint import load_checkpoint, save_checkpoint

# Odd, distinct widths: a swapped split (c_kv vs k_rope, k_nope vs v) cannot pass by accident.
MLA = dict(kv_lora_rank=12, q_lora_rank=10, qk_nope_head_dim=6, qk_rope_head_dim=4, v_head_dim=5)


def mla_model(seed: int = 0, dtype=torch.float64, **mla) -> DecoderLM:
    torch.manual_seed(seed)
    config = ModelConfig(vocab_size=61, d_model=36, n_layers=3, n_heads=3, max_seq_len=48,
                         mla=MLA | mla)  # fmt: skip
    model = DecoderLM(config).to(dtype).eval()
    for name, param in model.named_parameters():  # norms start at 1: make them matter
        if "layernorm" in name:
            param.data.normal_(1.0, 0.3)
    return model


def test_every_block_uses_mla_with_hf_parameter_names():
    model = mla_model()
    assert all(isinstance(block.attn, MultiHeadLatentAttention) for block in model.blocks)
    names = {name.split(".", 3)[3] for name in model.state_dict() if ".attn." in name}
    assert names == {
        f"{part}.weight"
        for part in (
            "q_a_proj",
            "q_a_layernorm",
            "q_b_proj",
            "kv_a_proj_with_mqa",
            "kv_a_layernorm",
            "kv_b_proj",
            "o_proj",
        )  # fmt: skip
    }


def test_contiguous_cache_stores_the_latent_only():
    model = mla_model(dtype=torch.float32)
    batch, max_len = 2, 20
    cache = ContiguousKVCache.for_model(model, batch, max_len)
    width = MLA["kv_lora_rank"] + MLA["qk_rope_head_dim"]
    assert cache.values == [] and all(k.shape == (batch, 1, max_len, width) for k in cache.keys)
    assert cache.nbytes() == 3 * batch * max_len * width * 4
    layout = kv_layout(model.config)
    assert layout.values_per_token == width == 16
    # The stored latent is the layer's own [kv_a_layernorm(c_kv) ; RoPE(k_rope)] (rope at 0 = id).
    ids = torch.randint(0, 61, (batch, 1))
    with torch.no_grad():
        model(ids, cache=cache)
        attn = model.blocks[0].attn
        c_kv, k_rope = attn.kv_a_proj_with_mqa(model.blocks[0].norm1(model.tok_emb(ids))).split(
            [12, 4], dim=-1
        )
        expected = torch.cat((attn.kv_a_layernorm(c_kv), k_rope[..., [0, 2, 1, 3]]), dim=-1)
    torch.testing.assert_close(cache.keys[0][:, 0, :1], expected)


def left_padded(rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, rows))
    ids = torch.tensor([[0] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    return ids, mask


@pytest.mark.parametrize("mode", ["auto", "naive", "absorbed"])
def test_cached_decoding_equals_full_forward_with_left_padding(mode):
    model = mla_model(attn_mode=mode)
    torch.manual_seed(1)
    rows = [torch.randint(0, 61, (n,)).tolist() for n in (9, 5, 7)]
    ids, mask = left_padded(rows)
    cache = ContiguousKVCache.for_model(model, 3, ids.shape[1])
    with torch.no_grad():
        full = model(ids, attention_mask=mask)
        steps = [model(ids[:, :4], attention_mask=mask[:, :4], cache=cache)]
        for t in range(4, ids.shape[1]):
            steps.append(model(ids[:, t : t + 1], attention_mask=mask[:, : t + 1], cache=cache))
        alone = []  # each row with no padding and no mask at all
        for row in rows:
            alone_cache = ContiguousKVCache.for_model(model, 1, len(row))
            alone.append((model(torch.tensor([row]), cache=alone_cache)[0], alone_cache))
    real = mask.bool()
    torch.testing.assert_close(torch.cat(steps, dim=1)[real], full[real], atol=1e-10, rtol=0)
    for i, (row_logits, alone_cache) in enumerate(alone):
        torch.testing.assert_close(full[i][real[i]], row_logits, atol=1e-10, rtol=0)
        # RoPE scores only see position differences, so the logits cannot tell whether the
        # model's positions (counting real tokens) reached the layer; the stored rope keys can.
        for stored, expected in zip(cache.keys, alone_cache.keys, strict=True):
            torch.testing.assert_close(stored[i, :, real[i]], expected[0], atol=1e-12, rtol=0)


def test_fp32_cached_decoding_within_1e_5():
    model = mla_model(dtype=torch.float32)
    ids = torch.randint(0, 61, (2, 12))
    cache = ContiguousKVCache.for_model(model, 2, 12)
    with torch.no_grad():
        full = model(ids)
        steps = [model(ids[:, :6], cache=cache)]
        steps += [model(ids[:, t : t + 1], cache=cache) for t in range(6, 12)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)


def test_modes_and_kernels_agree():
    naive, absorbed = mla_model(attn_mode="naive"), mla_model()
    absorbed.set_mla_mode("absorbed")
    assert absorbed.config.mla["attn_mode"] == "absorbed"
    assert all(block.attn.mode == "absorbed" for block in absorbed.blocks)
    ids = torch.randint(0, 61, (2, 10))
    with torch.no_grad():
        expected = naive(ids)
        torch.testing.assert_close(absorbed(ids), expected, atol=1e-10, rtol=0)
        absorbed.set_attn_impl("sdpa")
        assert all(block.attn.use_sdpa for block in absorbed.blocks)
        torch.testing.assert_close(absorbed(ids), expected, atol=1e-10, rtol=0)
        absorbed.set_attn_impl("flash")  # no tiled MLA kernel: the written-out steps run
        assert not any(block.attn.use_sdpa for block in absorbed.blocks)
        torch.testing.assert_close(absorbed(ids), expected, atol=1e-10, rtol=0)


@pytest.mark.parametrize("impl", ["scratch", "sdpa"])
def test_greedy_generate_with_cache_equals_without(impl):
    model = mla_model()
    model.set_attn_impl(impl)
    prompts = [[5, 9, 2, 33, 7, 1, 40], [17, 3], [8, 8, 60, 12]]
    cached = generate(model, None, prompts, max_new_tokens=8, eos_token_id=None)
    uncached = generate(model, None, prompts, max_new_tokens=8, eos_token_id=None, use_cache=False)
    alone = [generate(model, None, p, max_new_tokens=8, eos_token_id=None) for p in prompts]
    assert [r.token_ids for r in cached] == [r.token_ids for r in uncached]
    assert [r.token_ids for r in cached] == [r.token_ids for r in alone]


def test_checkpoint_round_trip(tmp_path):
    model = mla_model(dtype=torch.float32, q_lora_rank=None, attn_mode="absorbed")
    save_checkpoint(model, tmp_path / "mla")
    loaded = load_checkpoint(tmp_path / "mla")
    assert loaded.config.mla == model.config.mla
    assert hasattr(loaded.blocks[0].attn, "q_proj")  # no query compression survives the trip
    ids = torch.randint(0, 61, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids), model(ids), atol=0, rtol=0)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(position="learned"), "mla needs position 'rope'"),
        (dict(mla=MLA | dict(attn_mode="fast")), "attn_mode = 'fast'"),
    ],
)
def test_bad_mla_configs_name_the_field(overrides, message):
    with pytest.raises(LLMInternalsError) as error:
        DecoderLM(ModelConfig(vocab_size=61, d_model=36, n_layers=1, n_heads=3,
                              **dict(mla=MLA) | overrides))  # fmt: skip
    assert message in str(error.value)


def test_training_gradients_equal_in_both_modes():
    """Both modes train: the same loss gives the same gradient for every parameter (fp64)."""
    grads = {}
    ids = torch.randint(0, 61, (2, 8))
    for mode in ("naive", "absorbed"):
        model = mla_model(attn_mode=mode).train()
        loss = torch.nn.functional.cross_entropy(
            model(ids[:, :-1]).flatten(0, 1), ids[:, 1:].flatten()
        )
        loss.backward()
        grads[mode] = {name: p.grad for name, p in model.named_parameters()}
    for name, grad in grads["naive"].items():
        assert grad is not None and grad.abs().sum() > 0, name
        torch.testing.assert_close(grads["absorbed"][name], grad, atol=1e-10, rtol=0)


def test_speculative_generate_rolls_the_latent_cache_back():
    """Prompt-lookup speculation truncates and squeezes the latent cache (rows accept different
    numbers of drafts); its greedy tokens are the plain ones."""
    model = mla_model()
    prompts = [[3, 4, 5, 6, 3, 4, 5, 6, 3, 4], [7, 8, 7, 8, 7], [9, 1, 2]]
    plain = generate(model, None, prompts, max_new_tokens=12, eos_token_id=None)
    stats = SpeculativeStats()
    fast = generate(model, None, prompts, max_new_tokens=12, eos_token_id=None, ngram=True,
                    speculative_stats=stats)  # fmt: skip
    assert [r.token_ids for r in fast] == [r.token_ids for r in plain]
    assert stats.proposed > stats.accepted > 0  # drafts were kept and rejected


@pytest.mark.parametrize("value_dim", [0, 17, 2.5])
def test_latent_caches_check_the_value_width(value_dim):
    for make in (lambda: ContiguousKVCache(1, 1, 1, 4, 16, latent_value_dim=value_dim),
                 lambda: PagedKVCache(1, 4, 2, 1, 16, latent_value_dim=value_dim)):  # fmt: skip
        with pytest.raises(LLMInternalsError, match=f"latent_value_dim .* got {value_dim}"):
            make()
