"""Tiny models for the engine tests, in float64 so that greedy argmax ties cannot flip between
differently batched computations (the engine and `generate` must agree token for token)."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from llm_internals.inference.generate import generate
from llm_internals.models import DecoderLM, ModelConfig


def make_tiny_model(seed: int = 0, **overrides) -> DecoderLM:
    config = dict(vocab_size=48, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2,
                  max_seq_len=64) | overrides  # fmt: skip
    torch.manual_seed(seed)
    return DecoderLM(ModelConfig(**config)).double().eval()


@pytest.fixture(scope="package")
def tiny_model() -> DecoderLM:
    return make_tiny_model()


@pytest.fixture
def model_factory():
    return make_tiny_model


def reference_greedy(model, prompt: list[int], max_tokens: int, eos=None) -> list[int]:
    """What the contiguous-cache `generate` produces, alone in its batch."""
    return generate(model, None, prompt, max_new_tokens=max_tokens, eos_token_id=eos).token_ids


@pytest.fixture
def greedy_reference():
    cache: dict = {}

    def run(model, prompt, max_tokens, eos=None):
        key = (id(model), tuple(prompt), max_tokens, eos)
        if key not in cache:
            cache[key] = reference_greedy(model, list(prompt), max_tokens, eos)
        return cache[key]

    return run


def check_block_invariants(llm) -> None:
    """No block both free and referenced; ref counts equal block-table references; every block
    in exactly one state (free, cached-unreferenced, in use); the cache index is consistent."""
    manager = llm.block_manager
    live = [*llm.scheduler.running, *llm.scheduler.waiting]
    references = Counter(b for seq in live for b in seq.block_table)
    for seq in llm.scheduler.waiting:
        assert seq.block_table == [], "a waiting sequence holds no blocks"
    free = list(manager.free_block_ids)
    evictable = list(manager.evictable_block_ids)
    assert len(free) == len(set(free)) and len(evictable) == len(set(evictable))
    assert not set(free) & set(evictable)
    assert not set(free) & set(references), "a block is both free and referenced"
    assert not set(evictable) & set(references), "a block is both evictable and referenced"
    assert len(free) + len(evictable) + len(references) == manager.num_blocks
    for block in manager.blocks:
        assert block.ref_count == references[block.block_id]
    for h, block_id in manager.cached_block_ids.items():
        assert manager.blocks[block_id].hash == h
    for block_id in evictable:
        assert manager.blocks[block_id].hash is not None
    for block_id in free:
        assert manager.blocks[block_id].hash is None
    for seq in live:
        assert len(seq.block_table) == -(-seq.num_computed_tokens // manager.block_size)


@pytest.fixture
def invariants():
    return check_block_invariants
