"""Autoregressive generation, the public entry: `generate` (run to the end) and `stream` (a
StreamChunk per sampled token).

One API for both model families: a decoder-only model (DecoderLM) continues the prompt
(inference/decode_loop.py); an encoder-decoder (Seq2SeqLM, Marian) reads the prompt as the
source sentence and writes the target from decoder_start_token_id
(inference/seq2seq_generate.py). Both prefill/encode once, then decode one token per step with a
KV cache, sample with the shared Sampler, and stop on the same rules (inference/sequence_state.py).
Prompts of different lengths are padded (left by default, as HF does for decoder-only models;
right works too) into one batch with an attention_mask, and padding changes no result.

Finish reasons (inference/sequence_core.py, shared with the serving engine): "length"
(max_new_tokens reached), "eos" (the end-of-text token, not part of the output), "stop" (a stop
token id or stop string from SamplingParams; the text is cut before it), "context" (the next
token would sit past the model's max_seq_len; `sliding_window=True` crops the oldest tokens
instead and goes on).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch

from llm_internals.inference.decode_loop import decoder_only_loop
from llm_internals.inference.generation_request import PADDING_SIDES, is_seq2seq, prepare
from llm_internals.inference.generation_types import (
    FINISH_REASONS,
    GREEDY,
    GenerationResult,
    StreamChunk,
    Timing,
)
from llm_internals.inference.params import SamplingParams
from llm_internals.inference.seq2seq_generate import seq2seq_loop
from llm_internals.inference.sequence_state import SequenceState
from llm_internals.inference.speculative.config import SpeculativeConfig, speculative_config
from llm_internals.inference.speculative.loop import speculative_loop
from llm_internals.inference.speculative.stats import SpeculativeStats

__all__ = [
    "FINISH_REASONS",
    "GREEDY",
    "PADDING_SIDES",
    "GenerationResult",
    "StreamChunk",
    "Timing",
    "generate",
    "stream",
]


def stream(
    model: torch.nn.Module,
    tokenizer: Any | None,
    prompt: Any,
    *,
    max_new_tokens: int = 64,
    params: SamplingParams | Sequence[SamplingParams] | None = None,
    use_cache: bool = True,
    eos_token_id: Any = "auto",
    padding_side: str = "left",
    timing: Timing | None = None,
    sliding_window: bool = False,
    draft_model: torch.nn.Module | None = None,
    ngram: bool | tuple[int, int] = False,
    num_speculative_tokens: int = 4,
    adaptive_gamma: bool = False,
    speculative_stats: SpeculativeStats | None = None,
    **sampling: Any,
) -> Iterator[StreamChunk]:
    """Generate, yielding a StreamChunk per sampled token as soon as it is sampled.

    prompt: a string, a list of token ids, or a list of strings / id lists (a batch); for a
        Seq2SeqLM, the source sentence(s).
    params: one SamplingParams for all prompts or one per prompt; default greedy. Instead of
        params, SamplingParams fields may be given as keywords (temperature=0.8, top_k=40, seed=1);
        a seed seeds each prompt's own generator, so a prompt's draws do not depend on the batch.
    eos_token_id: "auto" (a Seq2SeqLM's eos id, else the tokenizer's end-of-text token), None, an
        id or a list of ids.
    timing: filled in with prefill/decode seconds (generator time only, not the consumer's).
    sliding_window: past the context, keep the last max_seq_len tokens and go on (each step then
        recomputes the cropped window without a cache; see decode_loop.py) instead of finishing
        with reason "context". A prompt longer than the context is cropped the same way.
    draft_model / ngram: speculative decoding (inference/speculative/): a smaller DecoderLM with
        the same tokenizer, or prompt lookup (True, or (min_n, max_n) n-gram sizes), drafts
        num_speculative_tokens tokens per round (adaptive_gamma: at most that many, following
        the acceptance rate) that one target forward verifies; the output distribution is the
        target's. speculative_stats (a SpeculativeStats) is filled in with the acceptance counts.
    """
    seqs, _ = prepare(model, tokenizer, prompt, max_new_tokens, params, eos_token_id,
                      padding_side, sampling, sliding_window)  # fmt: skip
    speculative = speculative_config(model, draft_model, ngram, num_speculative_tokens,
                                     adaptive_gamma, speculative_stats, use_cache=use_cache,
                                     sliding_window=sliding_window,
                                     seq2seq=is_seq2seq(model))  # fmt: skip
    return _loop(model, seqs, use_cache, padding_side, timing or Timing(), speculative)


def generate(
    model: torch.nn.Module,
    tokenizer: Any | None,
    prompt: Any,
    *,
    max_new_tokens: int = 64,
    params: SamplingParams | Sequence[SamplingParams] | None = None,
    use_cache: bool = True,
    eos_token_id: Any = "auto",
    padding_side: str = "left",
    sliding_window: bool = False,
    draft_model: torch.nn.Module | None = None,
    ngram: bool | tuple[int, int] = False,
    num_speculative_tokens: int = 4,
    adaptive_gamma: bool = False,
    speculative_stats: SpeculativeStats | None = None,
    **sampling: Any,
) -> GenerationResult | list[GenerationResult]:
    """Generate to the end and return the result (a list of results for a list of prompts).

    Same arguments as `stream`; see there. Greedy unless sampling parameters are given.
    """
    seqs, single = prepare(model, tokenizer, prompt, max_new_tokens, params, eos_token_id,
                           padding_side, sampling, sliding_window)  # fmt: skip
    speculative = speculative_config(model, draft_model, ngram, num_speculative_tokens,
                                     adaptive_gamma, speculative_stats, use_cache=use_cache,
                                     sliding_window=sliding_window,
                                     seq2seq=is_seq2seq(model))  # fmt: skip
    timing = Timing()
    for _chunk in _loop(model, seqs, use_cache, padding_side, timing, speculative):
        pass
    results = [
        GenerationResult(s.prompt_ids, s.output_ids, s.text, s.finish_reason, timing) for s in seqs
    ]
    return results[0] if single else results


def _loop(
    model: torch.nn.Module,
    seqs: list[SequenceState],
    use_cache: bool,
    padding_side: str,
    timing: Timing,
    speculative: SpeculativeConfig | None = None,
) -> Iterator[StreamChunk]:
    if speculative is not None:
        return speculative_loop(model, seqs, timing, speculative)
    loop = seq2seq_loop if is_seq2seq(model) else decoder_only_loop
    return loop(model, seqs, use_cache, padding_side, timing)
