"""ContiguousKVCache: storage, views, row selection, padded batches, memory size."""

from __future__ import annotations

import pytest
import torch

from llm_internals.errors import LLMInternalsError
from llm_internals.inference.kv_cache import ContiguousKVCache
from llm_internals.inference.kv_memory import kv_cache_bytes
from llm_internals.models import DecoderLM, ModelConfig


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models: a second torch thread only adds waiting (badly so on a shared CPU)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _model(**overrides) -> DecoderLM:
    torch.manual_seed(0)
    config = dict(vocab_size=64, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2,
                  max_seq_len=48) | overrides  # fmt: skip
    return DecoderLM(ModelConfig(**config)).eval()


def test_update_appends_and_returns_views_of_the_filled_part():
    cache = ContiguousKVCache(n_layers=2, batch=2, n_kv_heads=3, max_len=10, head_dim=4)
    k1, v1 = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    keys, values, mask = cache.update(0, k1, v1)
    assert mask is None and keys.shape == (2, 3, 4, 4)
    assert torch.equal(keys, k1) and torch.equal(values, v1)
    assert keys.data_ptr() == cache.keys[0].data_ptr()  # a view into the buffer, not a copy
    assert cache.past_length() == 0  # the last layer has not been written in this forward yet
    cache.update(1, k1, v1)
    assert cache.past_length() == 4
    k2, v2 = torch.randn(2, 3, 1, 4), torch.randn(2, 3, 1, 4)
    keys, values, _ = cache.update(0, k2, v2)
    assert torch.equal(keys, torch.cat([k1, k2], dim=2))
    assert torch.equal(values, torch.cat([v1, v2], dim=2))


def test_overflow_and_shape_mismatch_are_clear_errors():
    cache = ContiguousKVCache(n_layers=1, batch=1, n_kv_heads=2, max_len=3, head_dim=4)
    cache.update(0, torch.zeros(1, 2, 3, 4), torch.zeros(1, 2, 3, 4))
    with pytest.raises(LLMInternalsError, match="KV cache is full"):
        cache.update(0, torch.zeros(1, 2, 1, 4), torch.zeros(1, 2, 1, 4))
    other = ContiguousKVCache(n_layers=1, batch=1, n_kv_heads=2, max_len=3, head_dim=4)
    with pytest.raises(LLMInternalsError, match="got new keys of shape"):
        other.update(0, torch.zeros(1, 3, 1, 4), torch.zeros(1, 3, 1, 4))
    with pytest.raises(LLMInternalsError, match="max_len must be a positive integer"):
        ContiguousKVCache(n_layers=1, batch=1, n_kv_heads=2, max_len=0, head_dim=4)


def test_select_rows_keeps_the_chosen_rows_in_order():
    cache = ContiguousKVCache(n_layers=2, batch=3, n_kv_heads=1, max_len=6, head_dim=2)
    k = torch.arange(3 * 4 * 2, dtype=torch.float32).reshape(3, 1, 4, 2)
    for layer in range(2):
        cache.update(layer, k, -k)
    cache.select_rows([2, 0])
    assert cache.batch == 2 and cache.past_length() == 4
    keys, values, _ = cache.update(0, torch.zeros(2, 1, 1, 2), torch.zeros(2, 1, 1, 2))
    assert torch.equal(keys[:, :, :4], k[[2, 0]]) and torch.equal(values[:, :, :4], -k[[2, 0]])
    with pytest.raises(LLMInternalsError, match="out of range"):
        cache.select_rows([5])


def test_allocated_bytes_equal_the_kv_memory_formula():
    model = _model()
    cache = ContiguousKVCache.for_model(model, batch=3, max_len=40)
    c = model.config
    assert cache.nbytes() == kv_cache_bytes(c.n_layers, c.n_kv_heads, c.head_dim, 40, 3, 4)


@pytest.mark.parametrize("side", ["left", "right"])
def test_padded_batch_decoding_matches_each_row_alone(side):
    """Prefill a padded batch, then decode step by step through the cache with a growing
    attention_mask: each row's logits equal that row run alone without padding or cache."""
    model = _model()
    prompts = [[5, 9, 13, 2, 7, 30], [11, 3], [40, 41, 42, 43]]
    width = max(map(len, prompts))
    ids = torch.zeros(3, width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    last = []
    for row, p in enumerate(prompts):
        start = width - len(p) if side == "left" else 0
        ids[row, start : start + len(p)] = torch.tensor(p)
        mask[row, start : start + len(p)] = 1
        last.append(start + len(p) - 1)
    cache = ContiguousKVCache.for_model(model, batch=3, max_len=width + 8)
    sequences = [list(p) for p in prompts]
    with torch.no_grad():
        logits = model(ids, attention_mask=mask, cache=cache)[torch.arange(3), last]
        for _ in range(8):
            for row, seq in enumerate(sequences):
                alone = model(torch.tensor([seq]))[0, -1]
                assert (logits[row] - alone).abs().max().item() < 1e-5
            nxt = logits.argmax(-1)
            for row, seq in enumerate(sequences):
                seq.append(int(nxt[row]))
            mask = torch.cat([mask, torch.ones(3, 1, dtype=torch.long)], dim=1)
            logits = model(nxt[:, None], attention_mask=mask, cache=cache)[:, -1]
