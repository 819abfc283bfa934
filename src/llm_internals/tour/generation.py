"""Tour stage "generation": the trained model writes text, with the KV cache and without it.

Both runs sample with the same seed, so they must produce the same tokens: the cache only
avoids recomputing the keys and values of earlier tokens, it changes no number that matters.
The stage shows the text, checks the tokens are identical and measures the speed of each.
"""

from __future__ import annotations

import statistics
import time

from rich.table import Table

from llm_internals.inference.generate import generate
from llm_internals.tour import TourContext

PROMPT = "ROMEO.\n"
SAMPLING = {"temperature": 0.8, "top_k": 50, "seed": 1234}
REPEATS = 3
FALLBACK_VOCAB = 512


def _artifacts(ctx: TourContext):
    """The trained model and tokenizer, or a small random stand-in when the stages before did
    not run (said in the output)."""
    model, tokenizer = ctx.artifacts.get("model"), ctx.artifacts.get("tokenizer")
    if model is not None and tokenizer is not None:
        return model, tokenizer, "the model trained in the previous stage"
    import torch

    from llm_internals.models import DecoderLM, ModelConfig
    from llm_internals.tokenizer import train_bpe

    if tokenizer is None:
        tokenizer = train_bpe(ctx.train_text[:200_000] or PROMPT * 10, FALLBACK_VOCAB)
    torch.manual_seed(0)
    model = DecoderLM(ModelConfig(vocab_size=tokenizer.vocab_size, d_model=128, n_layers=4,
                                  n_heads=4, max_seq_len=256, position="learned",
                                  norm="layernorm", ffn="mlp", activation="gelu",
                                  tie_embeddings=True))  # fmt: skip
    return model, tokenizer, "a small RANDOM model (no trained model from an earlier stage)"


def _timed(model, tokenizer, new_tokens: int, use_cache: bool):
    times, result = [], None
    for _ in range(REPEATS):
        start = time.perf_counter()
        result = generate(model, tokenizer, PROMPT, max_new_tokens=new_tokens,
                          use_cache=use_cache, eos_token_id=None, **SAMPLING)  # fmt: skip
        times.append(time.perf_counter() - start)
    return result, statistics.median(times)


def run(ctx: TourContext) -> None:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one token at a time on a tiny model: a 2nd thread only waits
    try:
        _run(ctx)
    finally:
        torch.set_num_threads(threads)


def _run(ctx: TourContext) -> None:
    model, tokenizer, source = _artifacts(ctx)
    model = ctx.place(model)
    prompt_len = len(tokenizer.encode(PROMPT))
    new_tokens = model.config.max_seq_len - prompt_len  # fill the context window
    ctx.console.print(
        f"Generating {new_tokens} tokens after {PROMPT!r} with {source} (context "
        f"{model.config.max_seq_len} tokens; temperature {SAMPLING['temperature']}, top-k "
        f"{SAMPLING['top_k']}, seed {SAMPLING['seed']}), once with the KV cache and once "
        f"recomputing the whole sequence at every step. Median of {REPEATS} runs each, on "
        f"{ctx.where()}{' (one thread)' if ctx.device.type == 'cpu' else ''}."
    )
    cached, cached_s = _timed(model, tokenizer, new_tokens, use_cache=True)
    uncached, uncached_s = _timed(model, tokenizer, new_tokens, use_cache=False)
    ctx.console.rule("generated text (KV cache)")
    ctx.console.print(PROMPT + cached.text, markup=False, highlight=False)
    ctx.console.rule()
    table = Table(title="generation speed", title_justify="left")
    for column in ("", "seconds", "tokens/s", "tokens"):
        table.add_column(column, justify="right" if column else "left")
    for name, result, seconds in (("KV cache", cached, cached_s),
                                  ("no cache", uncached, uncached_s)):  # fmt: skip
        n = len(result.token_ids)
        table.add_row(name, f"{seconds:.3f}", f"{n / seconds:.0f}", str(n))
    ctx.console.print(table)
    same = cached.token_ids == uncached.token_ids
    ctx.console.print(
        f"Identical tokens with and without the cache: {ctx.verdict(same)}. The cache is "
        f"{uncached_s / cached_s:.1f}x faster here; the gap grows with length, because without "
        "it step n redoes the work of all n earlier tokens (O(n^2) in total instead of O(n)). "
        "See `llm-internals explain kv-cache`."
    )
    ctx.artifacts["generation"] = {"text": cached.text, "identical": same,
                                   "speedup": uncached_s / cached_s}  # fmt: skip
