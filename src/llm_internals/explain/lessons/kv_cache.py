"""Lesson "kv-cache": why generation caches keys and values, what it saves, what it costs.

Every number comes from the real code: `inference.generate` (the loop), `DecoderLM` run under a
recorder (Q, K, V per token), `inference.kv_cache.ContiguousKVCache` (what is stored), torch's
FlopCounterMode around the real forward passes (the FLOPs table), wall-clock timing of
`generate` with and without the cache, and `inference.kv_memory` on published model configs.
The models have random weights: the text they write is noise, the mechanics are the point.
"""

from __future__ import annotations

import torch

from llm_internals.explain.inputs import LessonInput
from llm_internals.explain.kv_cache_memory import (
    chosen_context_table,
    memory_figure,
    memory_table,
)
from llm_internals.explain.kv_cache_runs import (
    flop_model,
    flop_rows,
    timed_generation_rows,
    timing_model,
    tiny_model,
)
from llm_internals.explain.lesson import Lesson, Section, Step, Table
from llm_internals.explain.registry import LessonInfo
from llm_internals.explain.tiny_models import TINY_ALPHABET, tiny_tokenizer
from llm_internals.inference.generate import generate, stream
from llm_internals.inference.kv_cache import ContiguousKVCache
from llm_internals.inference.kv_memory import load_shape
from llm_internals.models import DecoderLM
from llm_internals.tokenizer.char import CharTokenizer
from llm_internals.trace import recording

INFO = LessonInfo(
    name="kv-cache",
    title="The KV cache: generating without recomputing the past",
    summary="The generation loop, Q/K/V per token, the FLOPs a cache saves, why only K and V are "
    "kept, the measured speedup, and the memory it costs on real models.",
)

ALPHABET = TINY_ALPHABET
PROMPT = "to be"
NEW_TOKENS = 6
FLOP_STEPS = (1, 2, 4, 8, 16, 32, 64)
TIMED_TOKENS = (32, 128)
MAX_FLOP_TOKENS = 256  # the timing model's context; a step over n tokens takes ~n^2 work
INPUTS = (
    LessonInput("tokens", "tokens the step sees (FLOPs)", 64, minimum=1, maximum=MAX_FLOP_TOKENS,
                help="a row of the FLOPs table; at most 256, the timing model's context"),
    LessonInput("context", "context length (memory)", 32768, minimum=1, maximum=10_000_000,
                help="tokens held in the KV cache of one sequence, for the memory table"),
)  # fmt: skip


def _section_loop(model: DecoderLM, tok: CharTokenizer) -> Section:
    prompt_ids = tok.encode(PROMPT)
    rows, text = [], PROMPT
    for step, chunk in enumerate(stream(model, tok, PROMPT, max_new_tokens=NEW_TOKENS), start=1):
        fed = PROMPT if step == 1 else text[-1]
        rows.append([step, repr(fed), len(prompt_ids) + step - 1, chunk.token_id,
                     repr(chunk.text)])  # fmt: skip
        text += chunk.text
    result = generate(model, tok, PROMPT, max_new_tokens=NEW_TOKENS)
    return Section(
        "How an LLM generates text",
        [
            Step(
                "A language model only ever predicts one thing: a probability for each possible "
                "next token. Text comes from a loop: predict, pick a token (here greedily, the "
                "most likely one), append it, and predict again with the longer sequence.",
                formula="x_{t+1} = argmax softmax(model(x_1 .. x_t))_last",
            ),
            Step(
                f"The real `generate` on a tiny random model with a character tokenizer, prompt "
                f"{PROMPT!r}: the first step (prefill) reads the whole prompt; each later step "
                "feeds just the token picked before, because the cache remembers the rest.",
                values={
                    "steps": Table(
                        ["step", "fed to the model", "tokens seen", "new token id", "new text"],
                        rows,
                    ),  # fmt: skip
                    "result": repr(PROMPT + result.text),
                    "finish reason": result.finish_reason,
                },
            ),
        ],
    )


def _section_inside(model: DecoderLM, tok: CharTokenizer) -> Section:
    ids = torch.tensor([tok.encode(PROMPT)])
    with recording() as rec, torch.no_grad():
        model(ids)
    q, k, v = rec.all("q")[0], rec.all("k")[0], rec.all("v")[0]  # layer 0
    return Section(
        "Inside the model: Q, K and V for every token",
        [
            Step(
                "In every layer each token's vector is projected three ways: a query (what am I "
                "looking for), a key (what do I offer) and a value (what I pass on). Attention "
                "compares the query of each token with the keys of it and every earlier token, "
                "and averages their values with the softmax weights.",
                formula="q_i = x_i W_q,  k_j = x_j W_k,  v_j = x_j W_v;  "
                "out_i = sum_{j<=i} softmax_j(q_i . k_j / sqrt(d)) v_j",
            ),
            Step(
                f"Layer 0, head 0, for the {ids.shape[1]} prompt tokens {PROMPT!r} (rows = tokens, "
                "columns = the head's 4 dimensions; RoPE already applied to q and k). Token i's "
                "key and value depend only on tokens 0..i, so they stay the same however much "
                "text follows.",
                values={"Q (head 0)": q[0, 0], "K (head 0)": k[0, 0], "V (head 0)": v[0, 0]},
            ),
        ],
    )


def _section_flops(model_for_flops: DecoderLM, tokens: int = 64) -> Section:
    steps = sorted({*FLOP_STEPS, tokens})
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, model_for_flops.config.vocab_size, (1, max(steps)), generator=gen)
    rows, total_without, total_with = flop_rows(model_for_flops, ids, steps)
    c = model_for_flops.config
    return Section(
        "The problem: recomputing the past",
        [
            Step(
                "Without a cache, the step that produces token n+1 runs the model over all n "
                "tokens again, although the keys and values of the first n-1 were computed in "
                "the previous step and have not changed. FLOPs counted by torch's "
                "FlopCounterMode on the real forward passes of the timing model "
                f"({c.n_layers} layers, d_model {c.d_model}, vocabulary {c.vocab_size}); "
                "logits only for the last position in both cases.",
                formula="no cache: n x (2 x linear params) + L x 4 n^2 d   |   "
                "cache: 2 x linear params + L x 4 n d  (+ 2 d V for the output head)",
                values={
                    "FLOPs of the step that sees n tokens": Table(
                        ["n", "no cache", "with cache", "recomputed", "wasted share"], rows
                    )
                },
            ),
            Step(
                "Summed over a whole generation the difference is quadratic against linear: "
                "without a cache, generating N tokens costs about N^2 / 2 token-passes through "
                "the weights, with one about N.",
                values={
                    f"sum over the {len(steps)} steps above, no cache": total_without,
                    "with cache": total_with,
                },
            ),
        ],
    )


def _section_solution(model: DecoderLM, tok: CharTokenizer) -> Section:
    ids = torch.tensor([tok.encode(PROMPT + "o")])
    prompt, new = ids[:, :-1], ids[:, -1:]
    cache = ContiguousKVCache.for_model(model, 1, max_len=16)
    with torch.no_grad():
        model(prompt, cache=cache)
        with recording() as rec:
            cached_logits = model(new, cache=cache)[0, -1]
        full_logits = model(ids)[0, -1]
    stored = rec.all("kv_cache.keys")[0][0, 0]  # layer 0, head 0, after this step
    new_k = rec.all("kv_cache.new_k")[0][0, 0]
    return Section(
        "The solution: keep K and V",
        [
            Step(
                "`ContiguousKVCache` preallocates, per layer, K and V buffers of shape (batch, "
                "kv_heads, max_len, head_dim). Prefill writes the prompt's keys and values; each "
                "decode step computes q, k, v for the one new token, appends k and v, and attends "
                "over the filled part of the buffer (a view, nothing is copied).",
                formula="K_cache[:, :, t] = k_t;  attention(q_t, K_cache[:, :, :t+1], "
                "V_cache[:, :, :t+1])",
            ),
            Step(
                f"Feeding the next character 'o' after the {prompt.shape[1]}-token prompt: layer "
                "0, head 0 computed only one new key row and the cache now holds "
                f"{stored.shape[0]} rows, the last being that new one.",
                values={"new key (computed this step)": new_k, "all stored keys": stored},
            ),
            Step(
                "The next-token logits from one cached step equal those of a full recomputation "
                "over the whole sequence (up to float rounding).",
                values={
                    "max |cached - recomputed| over the logits": float(
                        (cached_logits - full_logits).abs().max()
                    )
                },
                decimals=8,
            ),
        ],
    )


def _section_why_not_q(model: DecoderLM, tok: CharTokenizer) -> Section:
    ids = torch.tensor([tok.encode(PROMPT)])
    cache = ContiguousKVCache.for_model(model, 1, max_len=16)
    with torch.no_grad():
        model(ids[:, :-1], cache=cache)
        with recording() as rec:
            model(ids[:, -1:], cache=cache)
    q, k, weights = rec.all("q")[0], rec.all("k")[0], rec.all("weights")[0]
    return Section(
        "Why K and V, but not Q",
        [
            Step(
                "A query is used once: by its own token, to produce that token's output. Once "
                "the token's output exists, its query is never needed again. Keys and values are "
                "different: every later token's query compares against all earlier keys and "
                "mixes all earlier values. So the new step needs its own query plus every key and "
                "value so far, and only those are worth keeping.",
            ),
            Step(
                "The decode step recorded in layer 0: one query row, keys for every position, "
                "and one row of attention weights over all of them (summing to 1 per head).",
                values={
                    "q shape (batch, heads, queries, head_dim)": str(tuple(q.shape)),
                    "k shape (batch, kv_heads, keys, head_dim)": str(tuple(k.shape)),
                    "attention weights of the new token (head 0)": weights[0, 0],
                },
            ),
        ],
    )


def _section_speed() -> Section:
    rows = timed_generation_rows(timing_model(), TIMED_TOKENS)
    return Section(
        "How much faster",
        [
            Step(
                "Measured just now with the real `generate` on the timing model (random weights, "
                "one CPU thread, 1-token prompt): the same tokens, and the gap widens with "
                "length. Your machine's numbers will differ; `benchmarks/decode.py` measures "
                "GPT-2- and SmolLM-sized models against HF transformers.",
                values={
                    "seconds": Table(
                        ["new tokens", "with cache", "no cache", "speedup", "same tokens"], rows
                    ),  # fmt: skip
                },
            )
        ],
    )


def _section_memory(context: int = 32768) -> Section:
    big = load_shape("llama-3-70b")
    return Section(
        "The trade-off: memory",
        [
            Step(
                "The cache trades memory for compute: every layer keeps a key and a value "
                "vector per KV head for every token of every sequence. Computed by "
                "`inference.kv_memory` from the published config.json values (dtype as "
                "published: GPT-2 float32, Llama 3 bfloat16), one sequence. (GPT-2's context "
                "is 1,024 tokens; its columns show what the same formula gives.)",
                formula="bytes = 2 x layers x kv_heads x head_dim x tokens x batch x "
                "bytes_per_element",
                values={
                    "KV cache per sequence": memory_table(),
                    "KV cache at the chosen context": chosen_context_table(context),
                },
                figures=[memory_figure()],
            ),
            Step(
                "Grouped-query attention is what keeps large models usable: Llama-3-70B has 64 "
                "query heads but only 8 KV heads. With one KV head per query head its cache "
                "would be 8x larger: at 128k tokens this many GiB for a single sequence, more "
                "than the weights themselves in bfloat16 (about 131 GiB).",
                values={
                    "Llama-3-70B at 128k tokens, 64 KV heads (GiB)": round(
                        big.cache_bytes(131072) * big.heads // big.kv_heads / 2**30, 3
                    )
                },
            ),
        ],
    )


def build(tokens: int = 64, context: int = 32768) -> Lesson:
    tok = tiny_tokenizer()
    model = tiny_model(tok.vocab_size)
    return Lesson(
        name=INFO.name,
        title=INFO.title,
        summary=INFO.summary,
        sections=[
            _section_loop(model, tok),
            _section_inside(model, tok),
            _section_flops(flop_model(), tokens),
            _section_solution(model, tok),
            _section_why_not_q(model, tok),
            _section_speed(),
            _section_memory(context),
        ],
    )
