"""The memory side of the `kv-cache` lesson: the KV cache of one sequence on published model
configs (`inference.kv_memory`, dtype as published), as tables and as a figure against length.
"""

from __future__ import annotations

from llm_internals.explain.figures import line_figure
from llm_internals.explain.lesson import Table
from llm_internals.inference.kv_memory import load_shape

MEMORY_MODELS = ("gpt2", "llama-3-8b", "llama-3-70b")
MEMORY_TOKENS = (4096, 131072)
FIGURE_CONTEXTS = tuple(2**i for i in range(10, 18))  # 1k .. 128k tokens


def memory_figure():
    """KV cache GiB of one sequence against its length, for each of MEMORY_MODELS."""
    gib = {name: [load_shape(name).cache_bytes(t) / 2**30 for t in FIGURE_CONTEXTS]
           for name in MEMORY_MODELS}  # fmt: skip
    at_end = ", ".join(f"{name} {values[-1]:g} GiB" for name, values in gib.items())
    return line_figure(
        "kv_cache", "memory",
        "The KV cache of one sequence (inference.kv_memory on the published configs, dtype as "
        f"published) grows linearly with its length; at {FIGURE_CONTEXTS[-1]:,} tokens: {at_end}.",
        FIGURE_CONTEXTS, gib,
        "tokens in the cache", "KV cache (GiB)", title="KV cache memory vs context",
        logx=True, logy=True,
    )  # fmt: skip


def memory_table() -> Table:
    """Shape, bytes per token and GiB at MEMORY_TOKENS of each of MEMORY_MODELS' KV caches."""
    rows = []
    for name in MEMORY_MODELS:
        shape = load_shape(name)
        rows.append([name, shape.layers, f"{shape.kv_heads}/{shape.heads}", shape.head_dim,
                     shape.dtype, shape.bytes_per_token,
                     *(round(shape.cache_bytes(t) / 2**30, 3) for t in MEMORY_TOKENS)])  # fmt: skip
    return Table(
        [
            "model",
            "layers",
            "kv/heads",
            "head_dim",
            "dtype",
            "bytes/token",
            "GiB at 4k tokens",
            "GiB at 128k tokens",
        ],
        rows,
    )  # fmt: skip


def chosen_context_table(context: int) -> Table:
    """Each of MEMORY_MODELS' KV cache of one sequence at `context` tokens."""
    chosen = [
        [name, context, load_shape(name).cache_bytes(context),
         round(load_shape(name).cache_bytes(context) / 2**30, 3)]
        for name in MEMORY_MODELS
    ]  # fmt: skip
    return Table(["model", "tokens", "bytes", "GiB"], chosen)
