"""Greedy outputs of the engine equal the contiguous-cache `generate`, request by request,
whatever the batching, chunking, preemption or prefix reuse."""

from __future__ import annotations

import pytest
import torch

from llm_internals.inference.paged import LLM
from llm_internals.inference.params import SamplingParams

GREEDY = SamplingParams(temperature=0.0, max_tokens=10)


def random_prompts(count: int, low: int, high: int, seed: int, vocab: int = 48) -> list[list[int]]:
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(low, high + 1, (count,), generator=gen).tolist()
    return [torch.randint(0, vocab, (n,), generator=gen).tolist() for n in lengths]


def assert_matches_generate(llm, model, prompts, params, greedy_reference):
    outputs = llm.generate(prompts, params)
    params_list = params if isinstance(params, list) else [params] * len(prompts)
    assert len(outputs) == len(prompts)
    for prompt, p, out in zip(prompts, params_list, outputs, strict=True):
        assert out.prompt_token_ids == prompt
        assert out.token_ids == greedy_reference(model, prompt, p.max_tokens)
        assert out.finished and out.finish_reason == "length"
    return outputs


MODELS = {
    "llama-gqa-scratch": dict(),
    "llama-gqa-sdpa": dict(attn_impl="sdpa"),
    "gpt2-style": dict(position="learned", norm="layernorm", ffn="mlp", activation="gelu",
                       n_kv_heads=4, qkv_bias=True, attn_out_bias=True, mlp_bias=True),
    "mqa-qknorm": dict(n_kv_heads=1, qk_norm=True),
    "sliding-window": dict(sliding_window=6),
    "sliding-window-sdpa": dict(sliding_window=6, attn_impl="sdpa"),
}  # fmt: skip


@pytest.mark.parametrize("variant", list(MODELS))
def test_continuous_batching_with_mixed_lengths(variant, model_factory, greedy_reference):
    model = model_factory(seed=3, **MODELS[variant])
    prompts = random_prompts(9, 1, 20, seed=1)
    params = [SamplingParams(temperature=0.0, max_tokens=m) for m in (3, 12, 1, 7, 15, 5, 9, 2, 11)]
    llm = LLM(model, block_size=4, num_blocks=64, max_num_seqs=4, max_num_batched_tokens=24)
    assert_matches_generate(llm, model, prompts, params, greedy_reference)
    stats = llm.stats()
    assert stats.blocks_used == 0 and stats.preemptions == 0
    assert stats.num_requests_finished == 9


def test_chunked_prefill_of_prompts_longer_than_the_step_budget(tiny_model, greedy_reference):
    prompts = random_prompts(5, 20, 40, seed=2)
    llm = LLM(tiny_model, block_size=4, num_blocks=80, max_num_seqs=3, max_num_batched_tokens=6)
    assert_matches_generate(llm, tiny_model, prompts, GREEDY, greedy_reference)
    # every prompt needed several chunks: at least sum(ceil(len / 6)) steps of prefill
    assert llm.stats().num_steps >= sum(-(-len(p) // 6) for p in prompts)


def test_preemption_when_the_pool_runs_out(tiny_model, greedy_reference):
    prompts = random_prompts(8, 5, 14, seed=4)
    params = SamplingParams(temperature=0.0, max_tokens=20)
    # one request needs at most ceil((14 + 19) / 4) = 9 blocks; 12 cannot hold three of them
    llm = LLM(tiny_model, block_size=4, num_blocks=12, max_num_seqs=4, max_num_batched_tokens=32)
    assert_matches_generate(llm, tiny_model, prompts, params, greedy_reference)
    stats = llm.stats()
    assert stats.preemptions > 0
    assert stats.blocks_used == 0


def test_preemption_without_prefix_cache_recomputes_everything(tiny_model, greedy_reference):
    prompts = random_prompts(6, 5, 14, seed=5)
    params = SamplingParams(temperature=0.0, max_tokens=20)
    llm = LLM(tiny_model, block_size=4, num_blocks=11, max_num_seqs=4, max_num_batched_tokens=9,
              enable_prefix_caching=False)  # fmt: skip
    assert_matches_generate(llm, tiny_model, prompts, params, greedy_reference)
    assert llm.stats().preemptions > 0
    assert llm.stats().prefix_cache_hit_tokens == 0


def test_prefix_reuse_across_and_within_batches(tiny_model, greedy_reference):
    shared = list(range(10, 30))  # 20 tokens: 5 full blocks of 4
    tails = random_prompts(6, 1, 6, seed=6)
    prompts = [shared + t for t in tails]
    llm = LLM(tiny_model, block_size=4, num_blocks=120, max_num_seqs=2, max_num_batched_tokens=64)
    assert_matches_generate(llm, tiny_model, prompts[:1], GREEDY, greedy_reference)
    assert llm.stats().prefix_cache_hit_tokens == 0
    assert llm.stats().blocks_cached >= 5  # the finished request's full blocks stay cached
    assert_matches_generate(llm, tiny_model, prompts[1:], GREEDY, greedy_reference)
    stats = llm.stats()
    assert stats.prefix_cache_hit_tokens >= 5 * 20  # every later request reused the 5 blocks
    assert 0 < stats.prefix_cache_hit_rate < 1
    # the same prompt again: everything but the last block's worth is a hit
    again = assert_matches_generate(llm, tiny_model, prompts[2:3], GREEDY, greedy_reference)
    assert again[0].token_ids == greedy_reference(tiny_model, prompts[2], 10)


def test_small_pool_with_prefixes_chunks_and_preemption_together(tiny_model, greedy_reference):
    base = random_prompts(2, 9, 9, seed=7)
    prompts = [base[i % 2] + t for i, t in enumerate(random_prompts(10, 1, 12, seed=8))]
    params = [SamplingParams(temperature=0.0, max_tokens=m) for m in range(3, 23, 2)]
    llm = LLM(tiny_model, block_size=2, num_blocks=24, max_num_seqs=5, max_num_batched_tokens=7)
    assert_matches_generate(llm, tiny_model, prompts, params, greedy_reference)
    stats = llm.stats()
    assert stats.preemptions > 0 and stats.prefix_cache_hit_tokens > 0


def test_generation_stops_at_the_context_window(model_factory, greedy_reference):
    model = model_factory(max_seq_len=24)
    prompt = random_prompts(1, 20, 20, seed=9)[0]
    llm = LLM(model, block_size=4, num_blocks=8)
    out = llm.generate(prompt, SamplingParams(temperature=0.0, max_tokens=50))[0]
    assert out.finish_reason == "context"
    assert out.token_ids == greedy_reference(model, prompt, 50)  # generate stops there too
    assert len(prompt) + len(out.token_ids) == 25  # the last token is sampled, never fed
