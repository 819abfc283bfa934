"""Speculative decoding in the engine (paged/speculation.py): greedy output equals the target
alone, token for token, whatever the draft (the target itself: nearly everything accepted; an
unrelated random model: nearly nothing; n-gram lookup), across mixed batches with chunked
prefills, prefix-cache hits, max_tokens and stop tokens ending a sample mid-draft; the pool
drains; bad drafts and n > 1 are refused before anything is allocated."""

from __future__ import annotations

import copy

import pytest
import torch

from llm_internals.errors import LLMInternalsError
from llm_internals.inference.paged import LLM
from llm_internals.inference.params import SamplingParams
from llm_internals.tokenizer.char import CharTokenizer

from .conftest import make_tiny_model

SHARED = [1, 2, 3, 4, 5, 6, 7, 8]  # two full blocks of 4: the second wave hits the prefix cache
# (prompt, max_tokens, stop_token_ids): a long prompt (chunked), repeats (n-gram matches),
# samples ending at max_tokens 1 and 2 (mid-draft), a stop token
FIRST_WAVE = [
    (SHARED + [9, 10], 14, ()),
    ([5, 9, 2], 2, ()),
    (list(range(10, 40)), 9, ()),
    ([7, 8, 7, 8, 7, 8, 7], 12, ()),
]
SECOND_WAVE = [
    (SHARED + [11], 11, ()),
    (SHARED + [9, 10, 3], 1, ()),
    ([3, 1, 4, 1, 5], 16, (17, 30)),
]


def run_engine(target, tokenizer=None, waves=(FIRST_WAVE, SECOND_WAVE), **spec):
    """Run the waves (the second added after two steps); final outputs by request id, and the
    engine."""
    llm = LLM(target, tokenizer, block_size=4, num_blocks=80, max_num_seqs=4,
              max_num_batched_tokens=16, **spec)  # fmt: skip
    start = llm.stats()
    assert start.blocks_free == 80
    final = {}
    for number, wave in enumerate(waves):
        for i, (prompt, max_tokens, stop_ids) in enumerate(wave):
            params = SamplingParams(temperature=0.0, max_tokens=max_tokens,
                                    stop_token_ids=stop_ids)  # fmt: skip
            llm.add_request(f"{number}-{i}", prompt, params)
        for _ in range(2 if number + 1 < len(waves) else 500):
            for out in llm.step():
                if out.finished:
                    final[out.request_id] = (out.token_ids, out.finish_reason)
            if not llm.has_unfinished():
                break
    assert not llm.has_unfinished()
    stats = llm.stats()
    assert stats.blocks_used == 0 and stats.blocks_free + stats.blocks_cached == 80
    if llm.speculation is not None and llm.speculation.draft is not None:
        draft = llm.speculation.draft.blocks
        assert draft.num_available_blocks == draft.num_blocks, "draft blocks leaked"
    return final, llm


@pytest.fixture(scope="module")
def plain_run(tiny_model):
    return run_engine(tiny_model)[0]


@pytest.mark.parametrize(
    "draft, gamma",
    [("target", 3), ("random", 2), ("ngram", 4), ("target", 1)],
)
def test_greedy_speculative_engine_equals_the_target_alone(
    tiny_model, greedy_reference, plain_run, draft, gamma
):
    spec = dict(num_speculative_tokens=gamma)
    if draft == "ngram":
        spec["speculative_ngram"] = True
    else:
        spec["speculative_model"] = tiny_model if draft == "target" else make_tiny_model(seed=7)
    final, llm = run_engine(tiny_model, **spec)
    assert final == plain_run  # the engine without speculation: tokens and finish reasons
    for number, wave in enumerate((FIRST_WAVE, SECOND_WAVE)):
        for i, (prompt, max_tokens, stop_ids) in enumerate(wave):
            if not stop_ids:
                assert final[f"{number}-{i}"][0] == greedy_reference(tiny_model, prompt, max_tokens)
    stats = llm.stats()
    assert stats.prefix_cache_hit_tokens >= 8, "the second wave should hit the prefix cache"
    spec = stats.speculative
    assert spec.proposed > 0 and spec.rounds > 0 and 0 < spec.target_forwards <= spec.rounds
    assert spec.per_position_proposed[0] == spec.rounds
    assert sum(spec.per_position_accepted) == spec.accepted
    assert spec.tokens_emitted == spec.accepted + spec.rounds
    if draft == "target":  # the draft is the target: every draft token is accepted
        assert spec.accepted == spec.proposed
        assert spec.tokens_per_target_forward > 1.5
    if draft == "random":
        assert spec.acceptance_rate < 0.3


def test_stop_strings_ending_mid_draft():
    """A stop string found inside an accepted draft ends the sample there, as without a draft."""
    tokenizer = CharTokenizer.train("abcdefghijklmnopqrstuvwxyz .")
    model = make_tiny_model(seed=3, vocab_size=tokenizer.vocab_size)
    prompts = ["the cat", "on the mat", "dog sat"]
    plain = LLM(model, tokenizer, block_size=4, num_blocks=120, max_num_seqs=4)
    free = [plain.generate(p, SamplingParams(temperature=0.0, max_tokens=20))[0].text
            for p in prompts]  # fmt: skip
    stops = [t[len(t) // 3 : len(t) // 3 + 2] for t in free]  # strings the outputs hold
    outputs = {}
    for spec in ({}, dict(speculative_model=model, num_speculative_tokens=4)):
        llm = LLM(model, tokenizer, block_size=4, num_blocks=120, max_num_seqs=4, **spec)
        params = [SamplingParams(temperature=0.0, max_tokens=20, stop=[s]) for s in stops]
        outs = llm.generate(prompts, params)
        outputs[bool(spec)] = [(o.text, o.token_ids, o.finish_reason) for o in outs]
        assert llm.stats().blocks_used == 0
    assert outputs[True] == outputs[False]
    assert [reason for *_, reason in outputs[True]] == ["stop"] * 3


def test_bad_drafts_and_settings_are_clear_errors(tiny_model):
    with pytest.raises(LLMInternalsError, match=r"--speculative-model.*\(40 tokens\).*\(48\)"):
        LLM(tiny_model, num_blocks=8, speculative_model=make_tiny_model(vocab_size=40))
    for gamma in (0, -2):
        with pytest.raises(LLMInternalsError, match=rf"--num-speculative-tokens.*got {gamma}"):
            LLM(tiny_model, num_blocks=8, speculative_ngram=True, num_speculative_tokens=gamma)
    with pytest.raises(LLMInternalsError, match="exclude each other"):
        LLM(tiny_model, num_blocks=8, speculative_ngram=True, speculative_model=tiny_model)
    with pytest.raises(LLMInternalsError, match="needs a draft"):
        LLM(tiny_model, num_blocks=8, num_speculative_tokens=3)


def test_n_above_one_is_refused_and_nothing_is_allocated(tiny_model):
    llm = LLM(tiny_model, block_size=4, num_blocks=20, speculative_model=tiny_model)
    with pytest.raises(LLMInternalsError, match=r"n=2 .*speculative"):
        llm.add_request("a", [1, 2, 3], SamplingParams(n=2, max_tokens=4))
    assert llm.stats().blocks_free == 20 and not llm.has_unfinished()
    assert llm.generate([1, 2, 3], SamplingParams(temperature=0.0, max_tokens=4))[0].finished


def test_drafts_respect_the_context_window(tiny_model, greedy_reference):
    """Near max_seq_len the draft is cut so that no position past the context is fed."""
    prompt = list(range(1, 40)) * 2
    prompt = prompt[:60]  # 4 positions left of 64
    llm = LLM(tiny_model, block_size=4, num_blocks=40, speculative_model=tiny_model,
              num_speculative_tokens=6)  # fmt: skip
    out = llm.generate(prompt, SamplingParams(temperature=0.0, max_tokens=10))[0]
    assert out.finish_reason == "context"
    assert out.token_ids == greedy_reference(tiny_model, prompt, 10)[: len(out.token_ids)]
    assert torch.is_tensor(llm.cache.keys[0])


def layer0_keys(model, token_ids: list[int]) -> torch.Tensor:
    """Layer 0's keys (n_kv, tokens, head_dim) of a plain forward over token_ids."""
    from llm_internals.layers.rope import apply_rope

    attn = model.blocks[0].attn
    ids = torch.tensor(token_ids)[None]
    with torch.no_grad():
        x = model.blocks[0].norm1(model.tok_emb(ids))
        k = attn.k_proj(x).view(1, -1, attn.n_kv_heads, attn.head_dim).transpose(1, 2)
        cos, sin = model.rope(torch.arange(ids.shape[1])[None], dtype=x.dtype)
        k = apply_rope(attn.k_norm(k) if attn.k_norm else k, cos, sin, attn.rope_layout)
    return k[0]


def stored_keys(cache, block_table: list[int], count: int) -> torch.Tensor:
    positions = torch.arange(count)
    blocks = torch.tensor(block_table)[positions // cache.block_size]
    return cache.keys[0][:, blocks, positions % cache.block_size]


def test_both_caches_equal_a_plain_run_after_rejections(tiny_model):
    """Mid-generation, after many rejected drafts, the K/V in the target's pool and in the
    draft's pool equal a plain forward over the kept tokens (the rollback left nothing stale)."""
    draft_model = copy.deepcopy(tiny_model)  # the target with noise: accepts some, rejects some
    torch.manual_seed(0)
    with torch.no_grad():
        for weight in draft_model.parameters():
            weight.add_(torch.randn_like(weight) * 1e-3)
    llm = LLM(tiny_model, block_size=4, num_blocks=40, speculative_model=draft_model,
              num_speculative_tokens=3)  # fmt: skip
    llm.add_request("a", [5, 9, 2, 7], SamplingParams(temperature=0.0, max_tokens=30))
    for _ in range(8):
        llm.step()
    seq = llm.requests["a"][0]
    state = llm.speculation.draft.states[seq.seq_id]
    assert 0 < llm.stats().speculative.accepted < llm.stats().speculative.proposed
    assert seq.num_computed_tokens == seq.num_tokens - 1 > 10
    assert len(seq.block_table) == -(-seq.num_computed_tokens // 4)
    for model, cache, table, count in (
        (tiny_model, llm.cache, seq.block_table, seq.num_computed_tokens),
        (draft_model, llm.speculation.draft.cache, state.block_table, state.num_computed_tokens),
    ):
        assert count >= seq.num_tokens - 2
        expected = layer0_keys(model, seq.token_ids[:count])
        torch.testing.assert_close(stored_keys(cache, table, count), expected, rtol=0, atol=1e-12)


def test_adaptive_gamma_drafts_less_when_drafts_fail(tiny_model, greedy_reference):
    """With an unrelated draft nothing is accepted: adaptive gamma falls to 1 draft per round
    (fixed gamma keeps drafting 4), and the output is still the target's."""
    prompt = [5, 9, 2, 7]
    rounds = {}
    for adaptive in (False, True):
        llm = LLM(tiny_model, block_size=4, num_blocks=40, speculative_model=make_tiny_model(7),
                  num_speculative_tokens=4, adaptive_gamma=adaptive)  # fmt: skip
        out = llm.generate(prompt, SamplingParams(temperature=0.0, max_tokens=24))[0]
        assert out.token_ids == greedy_reference(tiny_model, prompt, 24)
        spec = llm.stats().speculative
        assert spec.adaptive == adaptive and spec.accepted == 0
        rounds[adaptive] = spec.per_position_proposed
    assert rounds[False][3] >= rounds[False][0] - 3 > 10  # 4 drafts a round (fewer at the end)
    assert rounds[True][3] <= 2 and rounds[True][0] > 10  # gamma dropped to 1 after a few
