"""Cache rollback: after any sequence of accepted and rejected drafts, what the caches hold
equals a plain run over the same tokens.

The reference for a row's K/V is the model run over exactly that row's tokens, alone, into a
fresh ContiguousKVCache (one prefill). RowCache rows may hold holes (rejected drafts of a batch
whose rows accepted different numbers); only their real columns (mask 1) are compared, in order.
"""

from __future__ import annotations

import random

import pytest
import torch

from llm_internals.errors import LLMInternalsError
from llm_internals.inference.kv_cache import ContiguousKVCache
from llm_internals.inference.speculative.row_cache import RowCache, common_prefix
from llm_internals.models import DecoderLM, ModelConfig


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=50, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2,
                         max_seq_len=128)  # fmt: skip
    return DecoderLM(config).double().eval()


def plain_keys_values(model, tokens):
    cache = ContiguousKVCache.for_model(model, 1, len(tokens))
    with torch.inference_mode():
        model.hidden_states(torch.tensor([tokens]), cache=cache)
    return [(k[0, :, : len(tokens)], v[0, :, : len(tokens)])
            for k, v in zip(cache.keys, cache.values, strict=True)]  # fmt: skip


def assert_rows_match_plain_runs(model, rows: RowCache):
    for r, tokens in enumerate(rows.tokens):
        real = rows.mask[r].bool().nonzero().flatten() if rows.columns else torch.tensor([])
        assert len(real) == len(tokens)
        if not tokens:
            continue
        expected = plain_keys_values(model, tokens)
        for layer, (k, v) in enumerate(expected):
            got_k = rows.cache.keys[layer][r][:, real]
            got_v = rows.cache.values[layer][r][:, real]
            torch.testing.assert_close(got_k, k, rtol=0, atol=1e-12)
            torch.testing.assert_close(got_v, v, rtol=0, atol=1e-12)


class CountingRowCache(RowCache):
    compactions = 0

    def compact(self) -> None:
        self.compactions += 1
        super().compact()


@pytest.mark.parametrize(("batch", "capacity"), [(1, 200), (3, 200), (3, 20)])
def test_random_accept_reject_rounds_leave_the_cache_of_a_plain_run(model, batch, capacity):
    """Rounds as in speculative decoding: feed the unseen tokens plus g drafts, keep the first
    n drafts and one new token. capacity 20 forces compactions (holes squeezed out)."""
    rng = random.Random(batch * 1000 + capacity)
    histories = [[rng.randrange(50) for _ in range(rng.randrange(1, 8))] for _ in range(batch)]
    rows = CountingRowCache(model, batch, capacity)
    with torch.inference_mode():
        for _ in range(6):
            unseen = rows.prepare(histories)
            assert_rows_match_plain_runs(model, rows)  # rolled back to the accepted tokens
            assert all(
                u and h[len(h) - len(u) :] == u for u, h in zip(unseen, histories, strict=True)
            )
            drafts = [[rng.randrange(50) for _ in range(rng.randrange(0, 4))] for _ in histories]
            rows.forward([u + d for u, d in zip(unseen, drafts, strict=True)])
            assert_rows_match_plain_runs(model, rows)
            for h, d in zip(histories, drafts, strict=True):
                h += d[: rng.randrange(len(d) + 1)] + [rng.randrange(50)]
    assert (rows.compactions > 0) == (capacity < 100)
    if batch == 1:  # batch 1 never leaves a hole: the cache is exactly the accepted tokens
        rows.prepare(histories)
        assert rows.columns == len(histories[0]) - 1 and bool(rows.mask.all())


def test_select_rows_keeps_the_right_caches(model):
    rows = RowCache(model, 3, 64)
    histories = [[1, 2, 3], [4, 5], [6, 7, 8, 9]]
    with torch.inference_mode():
        rows.forward(rows.prepare(histories))
        rows.select_rows([2, 0])
    assert rows.tokens == [[6, 7, 8, 9], [1, 2, 3]]
    assert_rows_match_plain_runs(model, rows)


def test_truncate_and_gather_columns(model):
    cache = ContiguousKVCache.for_model(model, 2, 10)
    with torch.inference_mode():
        model.hidden_states(torch.arange(12).view(2, 6), cache=cache)
    before = [k.clone() for k in cache.keys]
    cache.truncate(4)
    assert cache.past_length() == 4
    cache.gather_columns(torch.tensor([[3, 1], [0, 2]]))
    assert cache.past_length() == 2
    for k, old in zip(cache.keys, before, strict=True):
        assert torch.equal(k[0, :, :2], old[0, :, [3, 1]])
        assert torch.equal(k[1, :, :2], old[1, :, [0, 2]])
    with pytest.raises(LLMInternalsError, match="truncate to a length in"):
        cache.truncate(3)
    with pytest.raises(LLMInternalsError, match="column index outside"):
        cache.gather_columns(torch.tensor([[0, 2], [0, 1]]))


def test_common_prefix():
    assert common_prefix([1, 2, 3], [1, 2, 4, 5]) == 2
    assert common_prefix([1, 2], [1, 2, 3]) == 2
    assert common_prefix([], [1]) == 0
    assert common_prefix([1, 2, 3], [1, 2]) == 2


def test_generate_rolls_both_caches_back_to_the_accepted_tokens(model, monkeypatch):
    """End to end: at every round's start, the target's cache holds each row's text but its last
    token (accepted drafts kept, rejected ones gone), the draft's that or one token less (a last
    draft accepted was never fed to it), and both equal plain runs over those tokens."""
    from llm_internals.inference.generate import generate
    from llm_internals.inference.speculative import loop, proposers
    from llm_internals.inference.speculative.stats import SpeculativeStats

    checked = {"target": 0, "draft": 0}

    class CheckedRowCache(RowCache):
        def prepare(self, histories):
            unseen = super().prepare(histories)
            role = "target" if self.model is model else "draft"
            for held, history in zip(self.tokens, histories, strict=True):
                assert held == history[: len(held)]
                if held and role == "target":
                    assert len(held) == len(history) - 1
                elif held:
                    assert len(history) - 2 <= len(held) <= len(history) - 1
            assert_rows_match_plain_runs(self.model, self)
            checked[role] += 1
            return unseen

    monkeypatch.setattr(loop, "RowCache", CheckedRowCache)
    monkeypatch.setattr(proposers, "RowCache", CheckedRowCache)
    torch.manual_seed(1)
    draft = DecoderLM(model.config).double().eval()
    prompts = [[1, 2, 3, 4, 5, 6], [7, 8], [9, 10, 11, 12]]
    stats = SpeculativeStats()
    generate(model, None, prompts, max_new_tokens=16, eos_token_id=None, draft_model=draft,
             temperature=0.05, seed=3, speculative_stats=stats)  # fmt: skip
    assert checked["target"] >= 3 and checked["draft"] >= 3
    assert 0 < stats.accepted < stats.proposed  # both branches: acceptances and rejections
