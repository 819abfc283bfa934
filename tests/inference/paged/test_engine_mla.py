"""The engine serves MLA models from a latent block pool: each slot holds [c_kv ; k_rope]
(d_c + d_r values per layer) and nothing else, prefill chunks and decode groups attend in the
latent space, and the greedy tokens equal the contiguous-cache `generate` through batching,
chunked prefill, prefix reuse, preemption and n-gram speculation. The memory budget buys
2 x n_kv_heads x head_dim / (d_c + d_r) times more blocks than for ordinary attention."""

from __future__ import annotations

import pytest
import torch

from llm_internals.inference.generate import generate
from llm_internals.inference.paged import LLM
from llm_internals.inference.paged.paged_cache import bytes_per_block, num_blocks_for_budget
from llm_internals.inference.params import SamplingParams
from llm_internals.trace import recording

from .test_engine_greedy import assert_matches_generate, random_prompts

# kv_lora_rank 12 + qk_rope_head_dim 4 = 16 values per token per layer; the same model with
# 4 heads of 8 as MHA would cache 2 x 4 x 8 = 64.
MLA = dict(kv_lora_rank=12, q_lora_rank=10, qk_nope_head_dim=6, qk_rope_head_dim=4, v_head_dim=5)
LATENT = 16


@pytest.fixture(scope="module")
def mla_model():
    from .conftest import make_tiny_model

    model = make_tiny_model(seed=5, n_kv_heads=4, mla=MLA)
    for name, param in model.named_parameters():  # norms start at 1: make them matter
        if "layernorm" in name:
            param.data.normal_(1.0, 0.3)
    return model


def test_the_pool_holds_the_latent_only(mla_model):
    llm = LLM(mla_model, block_size=4, num_blocks=10)
    pool = llm.cache
    assert pool.values == [] and all(k.shape == (1, 10, 4, LATENT) for k in pool.keys)
    assert pool.nbytes() == 2 * 10 * 4 * LATENT * 8  # layers x blocks x block_size x 16 x fp64
    assert bytes_per_block(mla_model.config, 4, torch.float64) == 2 * 4 * LATENT * 8
    mha = mla_model.config.replace(mla=None)
    ratio = num_blocks_for_budget(mla_model.config, 4, torch.float64, 0.001) / (
        num_blocks_for_budget(mha, 4, torch.float64, 0.001)
    )  # fmt: skip
    assert ratio == pytest.approx(64 / LATENT, rel=0.01)


@pytest.mark.parametrize("impl", ["scratch", "sdpa"])
def test_continuous_batching_with_mixed_lengths(mla_model, impl, greedy_reference):
    mla_model.set_attn_impl(impl)
    try:
        prompts = random_prompts(7, 1, 20, seed=11)
        params = [SamplingParams(temperature=0.0, max_tokens=m) for m in (3, 12, 1, 7, 15, 5, 9)]
        llm = LLM(mla_model, block_size=4, num_blocks=64, max_num_seqs=4,
                  max_num_batched_tokens=24)  # fmt: skip
        assert_matches_generate(llm, mla_model, prompts, params, greedy_reference)
    finally:
        mla_model.set_attn_impl("scratch")


def test_prefixes_chunks_and_preemption_together(mla_model, greedy_reference):
    base = random_prompts(2, 9, 9, seed=7)
    prompts = [base[i % 2] + t for i, t in enumerate(random_prompts(8, 1, 12, seed=8))]
    params = [SamplingParams(temperature=0.0, max_tokens=m) for m in range(3, 19, 2)]
    llm = LLM(mla_model, block_size=2, num_blocks=24, max_num_seqs=5, max_num_batched_tokens=7)
    assert_matches_generate(llm, mla_model, prompts, params, greedy_reference)
    stats = llm.stats()
    assert stats.preemptions > 0 and stats.prefix_cache_hit_tokens > 0


def test_ngram_speculation_verifies_in_the_latent_space(mla_model, greedy_reference):
    prompts = [[3, 4, 5, 6, 3, 4, 5, 6, 3, 4], [7, 8, 7, 8, 7]]
    llm = LLM(mla_model, block_size=4, num_blocks=40, speculative_ngram=True,
              num_speculative_tokens=3)  # fmt: skip
    assert_matches_generate(llm, mla_model, prompts, SamplingParams(temperature=0.0,
                            max_tokens=12), greedy_reference)  # fmt: skip
    assert llm.stats().speculative.proposed > 0  # verification rounds of several queries ran


def test_recorded_decode_path_gives_the_same_tokens(mla_model, greedy_reference):
    prompt = random_prompts(1, 6, 6, seed=12)[0]
    llm = LLM(mla_model, block_size=4, num_blocks=16)
    with recording():  # decodes take layers/attention.py on gathered latent blocks
        out = llm.generate([prompt], SamplingParams(temperature=0.0, max_tokens=4))[0]
    assert out.token_ids == greedy_reference(mla_model, prompt, 4)


def test_seeded_sampling_and_the_context_limit_match_generate(mla_model):
    """Sampled tokens depend on the exact probabilities: the latent pool's must be generate's."""
    sampled = SamplingParams(temperature=0.9, top_k=30, top_p=0.9, repetition_penalty=1.3,
                             presence_penalty=0.5, seed=7, max_tokens=20)  # fmt: skip
    long_prompt = random_prompts(1, 60, 60, seed=13)[0]  # 4 tokens short of max_seq_len 64
    cases = [(random_prompts(1, 5, 5, seed=14)[0], sampled),
             (long_prompt, SamplingParams(temperature=0.0, max_tokens=20))]  # fmt: skip
    llm = LLM(mla_model, block_size=4, num_blocks=40, eos_token_id=None)
    outputs = llm.generate([p for p, _ in cases], [s for _, s in cases])
    for (prompt, params), out in zip(cases, outputs, strict=True):
        ours = generate(mla_model, None, prompt, max_new_tokens=params.max_tokens, params=params,
                        eos_token_id=None)  # fmt: skip
        assert (out.token_ids, out.finish_reason) == (ours.token_ids, ours.finish_reason)
    assert [out.finish_reason for out in outputs] == ["length", "context"]
