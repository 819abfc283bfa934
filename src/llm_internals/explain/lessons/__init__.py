"""Lessons, one module each, listed here in curriculum order (see explain/registry.py)."""

LESSON_MODULES: tuple[str, ...] = (
    "bpe",
    "softmax",
    "qkv",
    "scaling",
    "causal_mask",
    "transformer",
    "ffn",
    "rmsnorm",
    "rope",
    "gqa",
    "flash_attention",
    "cross_entropy",
    "backprop",
    "muon",
    "sampling",
    "kv_cache",
    "speculative_decoding",
    "paged_attention",
    "quantization",
    "lora",
)
