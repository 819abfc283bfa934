"""The models and measured runs of the `kv-cache` lesson: the lessons' tiny decoder, the tour-
shaped timing model (and its copy with attention as countable matmuls), the FLOPs of one
generation step with and without a cache (torch's FlopCounterMode around the real forward
passes), and wall-clock timing of the real `generate` with and without the cache.
"""

from __future__ import annotations

import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from llm_internals.explain.tiny_models import tiny_decoder
from llm_internals.inference.generate import generate
from llm_internals.inference.kv_cache import ContiguousKVCache
from llm_internals.models import DecoderLM


def tiny_model(vocab_size: int) -> DecoderLM:
    """The lessons' tiny decoder (explain/tiny_models.py): 2 layers, d_model 8, 2 heads of
    head_dim 4 (RoPE, RMSNorm, SwiGLU), small enough to print; seed 0."""
    return tiny_decoder(0, vocab_size=vocab_size, max_seq_len=128)


def timing_model() -> DecoderLM:
    """The tour's model shape (4 layers, d_model 128, GPT-2 style), random weights."""
    return tiny_decoder(0, vocab_size=8192, d_model=128, n_layers=4, n_heads=4, d_ff=None,
                        max_seq_len=256, position="learned", norm="layernorm", ffn="mlp",
                        activation="gelu", tie_embeddings=True, attn_impl="sdpa",
                        fused_ops=True)  # fmt: skip


def flop_model() -> DecoderLM:
    """The timing model with attention as written-out matmuls, which FlopCounterMode counts."""
    model = timing_model()
    model.set_attn_impl("scratch")
    return model


def step_flops(model: DecoderLM, ids: torch.Tensor, use_cache: bool) -> int:
    """FLOPs (multiply-adds x 2) of the generation step that predicts the token after `ids`:
    without a cache the whole sequence again; with one, only the last token (the cache already
    holds the others, filled outside the count)."""
    cache = None
    if use_cache:
        cache = ContiguousKVCache.for_model(model, 1, ids.shape[1])
        if ids.shape[1] > 1:
            with torch.no_grad():
                model.hidden_states(ids[:, :-1], cache=cache)
        ids = ids[:, -1:]
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        hidden = model.hidden_states(ids, cache=cache)
        model.lm_head(hidden[:, -1])  # generate computes logits for the last position only
    return counter.get_total_flops()


def flop_rows(model: DecoderLM, ids: torch.Tensor, steps: list[int]) -> tuple[list[list], int, int]:
    """One row per step length n: FLOPs without and with a cache, recomputed and wasted share;
    and the sums over all steps without and with a cache."""
    rows, total_without, total_with = [], 0, 0
    for n in steps:
        without = step_flops(model, ids[:, :n], use_cache=False)
        with_cache = step_flops(model, ids[:, :n], use_cache=True)
        rows.append([n, without, with_cache, without - with_cache,
                     f"{(without - with_cache) / without:.0%}"])  # fmt: skip
        total_without, total_with = total_without + without, total_with + with_cache
    return rows, total_without, total_with


def timed_generation_rows(model: DecoderLM, token_counts: tuple[int, ...]) -> list[list]:
    """Wall-clock seconds of the real `generate` with and without the cache (one thread,
    1-token prompt) for each number of new tokens, the speedup, and whether the tokens agree."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    rows = []
    try:
        for n in token_counts:
            times, tokens = {}, {}
            for use_cache in (True, False):
                start = time.perf_counter()
                result = generate(model, None, [1], max_new_tokens=n, use_cache=use_cache,
                                  eos_token_id=None)  # fmt: skip
                times[use_cache] = time.perf_counter() - start
                tokens[use_cache] = result.token_ids
            rows.append([n, round(times[True], 3), round(times[False], 3),
                         f"{times[False] / times[True]:.1f}x",
                         "yes" if tokens[True] == tokens[False] else "NO"])  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    return rows
