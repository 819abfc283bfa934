"""The serving engine: paged KV cache, block manager with prefix caching, continuous batching.

Read in this order: sequence.py (a request's state), block_manager.py (blocks, sharing, prefix
cache), paged_cache.py (the physical pool), paged_attention.py (attention through block tables),
scheduler.py (who runs each step), model_runner.py (the packed forward), engine.py (the API),
snapshot.py (a frozen, public view of the pool); speculation.py and draft_model.py (speculative
decoding inside the step).
"""

from llm_internals.inference.paged.block_manager import Block, BlockManager, block_hash
from llm_internals.inference.paged.engine import LLM
from llm_internals.inference.paged.outputs import EngineStats, RequestOutput
from llm_internals.inference.paged.paged_cache import PagedKVCache
from llm_internals.inference.paged.scheduler import ScheduledBatch, Scheduler
from llm_internals.inference.paged.sequence import RequestMetrics, Sequence, SequenceStatus
from llm_internals.inference.paged.snapshot import BlockInfo, PoolSnapshot, SequenceInfo

__all__ = [
    "LLM",
    "Block",
    "BlockInfo",
    "BlockManager",
    "EngineStats",
    "PagedKVCache",
    "PoolSnapshot",
    "RequestMetrics",
    "RequestOutput",
    "ScheduledBatch",
    "Scheduler",
    "Sequence",
    "SequenceInfo",
    "SequenceStatus",
    "block_hash",
]
