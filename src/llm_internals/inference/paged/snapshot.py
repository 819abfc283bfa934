"""A frozen, public picture of the paged KV pool: what a lesson, a test or a dashboard may read.

The engine's bookkeeping (the block manager's blocks and lists, each sequence's block table, the
K/V tensors of the pool) changes at every step and is the engine's own. `LLM.pool_snapshot()`
copies what a reader needs into plain frozen dataclasses, so reading never reaches into the
engine and a later step never changes what was read:

    blocks          per physical block: ref count (how many block tables hold it), the chained
                    hash of a cached full block, and its state ("free", "in use", "cached")
    free_block_ids  the free list, in the order blocks will be handed out
    evictable_block_ids   cached blocks nobody holds, least recently used first
    cached_block_ids      hash -> block id of every block in the prefix cache
    sequences       every unfinished sample: its tokens, how many have K/V, its block table
    keys, values    the K/V of the blocks asked for, read with `PagedKVCache.gather` (the read
                    attention does), so blocks [7, 2] come out as positions 0..2*block_size-1

Invariants a snapshot satisfies (tests/inference/paged/test_snapshot.py checks them against the
engine): a block's ref_count equals the number of block tables that hold it; every block is in
exactly one of the free list, the evictable list, or some table.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import torch

from llm_internals.errors import LLMInternalsError

BLOCK_STATES = ("free", "in use", "cached")


@dataclass(frozen=True)
class BlockInfo:
    """One physical block: how many tables hold it and, when it is in the prefix cache, the
    hash chained over all tokens up to its end (None otherwise)."""

    block_id: int
    ref_count: int
    hash: int | None

    @property
    def state(self) -> str:
        """ "in use" (ref_count >= 1), "cached" (unreferenced, keeps its hash) or "free"."""
        if self.ref_count:
            return "in use"
        return "cached" if self.hash is not None else "free"


@dataclass(frozen=True)
class SequenceInfo:
    """One unfinished sample: its tokens, how many of them have K/V in the pool, its table."""

    request_id: str
    index: int
    token_ids: tuple[int, ...]
    num_computed_tokens: int
    block_table: tuple[int, ...]

    @classmethod
    def of(cls, seq: Any) -> SequenceInfo:
        """Copy the public fields of an engine Sequence."""
        return cls(seq.request_id, seq.index, tuple(seq.token_ids), seq.num_computed_tokens,
                   tuple(seq.block_table))  # fmt: skip

    def block_tokens(self, i: int, block_size: int) -> tuple[int, ...]:
        """The tokens whose K/V sit in the i-th block of the table (its filled slots)."""
        return self.token_ids[i * block_size : min((i + 1) * block_size, self.num_computed_tokens)]


@dataclass(frozen=True)
class PoolSnapshot:
    """The pool at one moment (see the module docstring). keys/values: (n_layers, n_kv_heads,
    len(kv_block_ids) * block_size, head_dim), the blocks kv_block_ids laid out in that order;
    None when no blocks were asked for."""

    block_size: int
    blocks: tuple[BlockInfo, ...]
    free_block_ids: tuple[int, ...]
    evictable_block_ids: tuple[int, ...]
    cached_block_ids: Mapping[int, int] = field(default_factory=lambda: MappingProxyType({}))
    sequences: tuple[SequenceInfo, ...] = ()
    kv_block_ids: tuple[int, ...] = ()
    keys: torch.Tensor | None = None
    values: torch.Tensor | None = None

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    def sequence(self, request_id: str, index: int = 0) -> SequenceInfo:
        """The sample `index` of request `request_id` (an error names the ones there are)."""
        for seq in self.sequences:
            if seq.request_id == request_id and seq.index == index:
                return seq
        known = ", ".join(f"{s.request_id}#{s.index}" for s in self.sequences) or "none"
        raise LLMInternalsError(
            f"pool snapshot: no unfinished sample {request_id}#{index}; unfinished: {known}"
        )

    def samples(self, request_id: str) -> list[SequenceInfo]:
        """Every unfinished sample of a request, by sample index."""
        return sorted((s for s in self.sequences if s.request_id == request_id),
                      key=lambda s: s.index)  # fmt: skip

    def holders(self, block_id: int) -> list[SequenceInfo]:
        """The samples whose block tables hold block_id (once per table entry), sorted by
        (request id, sample index)."""
        ordered = sorted(self.sequences, key=lambda s: (s.request_id, s.index))
        return [s for s in ordered for b in s.block_table if b == block_id]
