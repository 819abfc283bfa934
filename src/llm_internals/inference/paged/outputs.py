"""What the engine reports: per-sample outputs after each step, and engine-wide statistics."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from llm_internals.inference.paged.sequence import RequestMetrics
from llm_internals.inference.sequence_core import FINISH_REASONS as ALL_FINISH_REASONS
from llm_internals.inference.speculative.stats import SpeculativeStats

FINISH_REASONS = tuple(ALL_FINISH_REASONS)  # what each means: inference/sequence_core.py


@dataclass
class RequestOutput:
    """One sample of one request after a step.

    token_ids: everything generated so far (an eos or stop token is not included);
    new_token_ids / new_text: what this step added (text is held back while it could still
    become part of a stop string). `finished` and `finish_reason` (FINISH_REASONS, described in
    inference/sequence_core.py) are this sample's; `error` says why when the reason is "error";
    `request_finished` is True once every sample of the request is.
    `index` numbers the samples of a request with n > 1 (0 otherwise).
    """

    request_id: str
    prompt_token_ids: list[int]
    token_ids: list[int]
    new_token_ids: list[int]
    text: str
    new_text: str
    finished: bool
    finish_reason: str | None
    metrics: RequestMetrics
    index: int = 0
    request_finished: bool = False
    error: str | None = None


@dataclass
class EngineStats:
    """A snapshot of the engine: the block pool, the prefix cache, the queues.

    KV waste = 1 - kv_slots_used / kv_slots_allocated: slots held by running sequences but not
    (yet) filled with a token's K/V. With paging that is at most the unfilled tail of each
    sequence's last block.
    """

    num_blocks: int
    block_size: int
    blocks_used: int
    blocks_free: int
    blocks_cached: int  # unreferenced but holding a cached prefix (evictable)
    prefix_cache_queried_tokens: int
    prefix_cache_hit_tokens: int
    prefix_cache_evictions: int
    preemptions: int
    kv_slots_used: int
    kv_slots_allocated: int
    kv_cache_bytes: int
    num_running: int
    num_waiting: int
    num_requests_added: int
    num_requests_finished: int
    num_requests_aborted: int
    num_steps: int
    generated_tokens: int
    extra: dict[str, float] = field(default_factory=dict)
    # speculative decoding (None: off): proposed / accepted drafts, per position, sequence-
    # rounds, batched target forwards, tokens per round (inference/speculative/stats.py)
    speculative: SpeculativeStats | None = None

    @property
    def prefix_cache_hit_rate(self) -> float:
        """Share of the prompt tokens looked up that were found in the prefix cache."""
        queried = self.prefix_cache_queried_tokens
        return self.prefix_cache_hit_tokens / queried if queried else 0.0

    @property
    def kv_waste(self) -> float:
        """Allocated slots not holding a token, as a fraction of allocated slots."""
        allocated = self.kv_slots_allocated
        return 1.0 - self.kv_slots_used / allocated if allocated else 0.0


def collect_stats(engine) -> EngineStats:
    """The EngineStats of an engine (paged/engine.py's LLM) between two steps."""
    manager, scheduler = engine.block_manager, engine.scheduler
    used_slots: dict[int, int] = {}
    for seq in scheduler.running:
        for i, block_id in enumerate(seq.block_table):
            filled = min(
                manager.block_size, max(seq.num_computed_tokens - i * manager.block_size, 0)
            )
            used_slots[block_id] = max(used_slots.get(block_id, 0), filled)
    counts = engine._counts
    spec = engine.speculation
    return EngineStats(
        num_blocks=manager.num_blocks,
        block_size=manager.block_size,
        blocks_used=manager.num_used_blocks,
        blocks_free=len(manager.free_block_ids),
        blocks_cached=len(manager.evictable_block_ids),
        prefix_cache_queried_tokens=manager.prefix_queried_tokens,
        prefix_cache_hit_tokens=manager.prefix_hit_tokens,
        prefix_cache_evictions=manager.evictions,
        preemptions=scheduler.num_preemptions,
        kv_slots_used=sum(used_slots.values()),
        kv_slots_allocated=manager.num_used_blocks * manager.block_size,
        kv_cache_bytes=engine.cache.nbytes(),
        num_running=len(scheduler.running),
        num_waiting=len(scheduler.waiting),
        num_requests_added=counts["added"],
        num_requests_finished=counts["finished"],
        num_requests_aborted=counts["aborted"],
        num_steps=counts["steps"],
        generated_tokens=counts["generated"],
        speculative=None if spec is None else copy.deepcopy(spec.stats),
    )
