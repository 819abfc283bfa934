"""Inference: sampling from logits, stopping, and the KV-cache memory arithmetic."""

from llm_internals.inference.kv_memory import KVShape, kv_cache_bytes, load_shape
from llm_internals.inference.params import SamplingParams
from llm_internals.inference.sampling import Sampler, make_generator, sample
from llm_internals.inference.stopping import IncrementalDetokenizer, StopChecker, StopReason

__all__ = [
    "IncrementalDetokenizer",
    "KVShape",
    "Sampler",
    "SamplingParams",
    "StopChecker",
    "StopReason",
    "kv_cache_bytes",
    "load_shape",
    "make_generator",
    "sample",
]
