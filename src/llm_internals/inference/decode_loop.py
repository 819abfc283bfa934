"""The decoder-only generation loop: prefill the prompts once, then one token per step.

    prefill:  hidden = model(prompt)             every prompt position at once, K/V cached
    loop:     logits = lm_head(hidden[last])     only the last position predicts the next token
              token  = sampler(logits)           greedy / temperature / top-k / top-p / min-p
              stop?  eos, stop token or string, max_new_tokens, or the context window is full
              hidden = model(token, cache)       one new position, attending to all cached K/V

With `use_cache=False` every step runs the model over the whole sequence again (the O(n^2)
baseline the cache removes); the tokens are the same. A sequence that finishes leaves the batch
(its cache rows are dropped) while the others continue.

Past the context (`sliding_window=True`, as nanoGPT's sample does): each step feeds the last
max_seq_len tokens of every row, cropped afresh, and the cache is dropped. Cropping the oldest
token changes what every later position attended to, so every layer's K/V changes: nothing
cached can be reused, and one forward over the window costs what re-prefilling a cache with it
would. So from the first crop on the loop recomputes without a cache (tokens then equal running
the model on the cropped window directly); until then it decodes with the cache as usual.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from llm_internals.inference.generation_request import pad_prompts
from llm_internals.inference.generation_types import StreamChunk, Timing
from llm_internals.inference.kv_cache import ContiguousKVCache
from llm_internals.inference.sampling import Sampler
from llm_internals.inference.sequence_state import SequenceState
from llm_internals.trace import is_recording, record


def sample_and_accept(
    sampler: Sampler, logits: torch.Tensor, active: list[SequenceState]
) -> tuple[list[int], list[StreamChunk]]:
    """Sample one token per active row (each with its own params and generator) and hand each
    to its sequence, which decides whether it is finished. A row whose logits cannot be sampled
    raises SamplingRowError (an LLMInternalsError): `generate` serves one caller, so it stops."""
    tokens = sampler(
        logits,
        [s.params for s in active],
        [s.generator for s in active],
        prompt_ids=[s.decoder_ids for s in active],
        output_ids=[s.output_ids for s in active],
    ).tolist()
    if is_recording():
        record("generate.tokens", torch.tensor(tokens), note="one token per sequence")
    return tokens, [s.accept_chunk(t) for s, t in zip(active, tokens, strict=True)]


@dataclass
class NextStep:
    """The rows that go on after a step: their sequences, their new tokens (rows, 1), and the
    index of the kept rows into the old batch (None when every row goes on)."""

    active: list[SequenceState]
    new_tokens: torch.Tensor
    index: torch.Tensor | None


def next_step(
    active: list[SequenceState], tokens: list[int], device: torch.device
) -> NextStep | None:
    """Drop the sequences that just finished; None when none is left. Callers select the same
    rows of their own tensors and caches with `index`."""
    keep = [r for r, s in enumerate(active) if s.finish_reason is None]
    if not keep:
        return None
    new_tokens = torch.tensor(tokens, device=device)[:, None]
    if len(keep) == len(active):
        return NextStep(active, new_tokens, None)
    index = torch.tensor(keep, device=device)
    return NextStep([active[r] for r in keep], new_tokens[index], index)


@contextmanager
def evaluating(model: torch.nn.Module) -> Iterator[None]:
    """Eval mode (no dropout) for the duration, then the mode the model had."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def cache_length(seqs: list[SequenceState], width: int) -> int:
    """Cache positions needed: the padded prompt plus every step that can still follow (with a
    sliding window, every step until the longest row fills the context)."""
    shortest = min(len(s.decoder_ids) for s in seqs)
    steps = min(seqs[0].max_new_tokens - 1, seqs[0].model_context - shortest)
    return width + max(steps, 0)


def windows(
    active: list[SequenceState], side: str, context: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each row's tokens so far (prompt and output), cropped to the last `context`, padded into
    one batch: (ids, attention_mask, index of each row's last token)."""
    rows = [(s.decoder_ids + s.output_ids)[-context:] for s in active]
    return pad_prompts(rows, side, device=device)


def decoder_only_loop(
    model: torch.nn.Module,
    seqs: list[SequenceState],
    use_cache: bool,
    padding_side: str,
    timing: Timing,
) -> Iterator[StreamChunk]:
    """Yield one StreamChunk per sampled token until every sequence has finished."""
    device = next(model.parameters()).device
    context = seqs[0].model_context
    active = list(seqs)  # row r of the current batch is active[r]
    ids, mask, last = windows(active, padding_side, context, device)
    cache = None
    if use_cache and not any(s.decoder_length > context for s in seqs):
        cache = ContiguousKVCache.for_model(model, len(seqs), cache_length(seqs, ids.shape[1]))
    padded = not bool(mask.all())
    sampler = Sampler()
    inputs = ids
    rows = torch.arange(len(seqs), device=device)
    whole_rows = True  # inputs hold every row's whole window (prefill, or no cache)
    prefill = True
    with evaluating(model):
        while True:
            started = time.perf_counter()
            with torch.inference_mode():
                hidden = model.hidden_states(
                    inputs, attention_mask=mask if padded else None, cache=cache
                )
                # Each row's last real token (right padding: not column -1).
                hidden_last = hidden[rows, last] if whole_rows else hidden[:, -1]
                tokens, chunks = sample_and_accept(sampler, model.lm_head(hidden_last), active)
            timing.add_step(time.perf_counter() - started, len(tokens), prefill)
            prefill = False
            yield from chunks

            started = time.perf_counter()
            step = next_step(active, tokens, device)
            if step is None:
                return
            active = step.active
            if cache is not None and any(s.decoder_length > context for s in active):
                cache = None  # a sliding window crops from now on (see the module docstring)
            if cache is None:  # the whole (cropped) sequences again
                ids, mask, last = windows(active, padding_side, context, device)
                padded, inputs = not bool(mask.all()), ids
                rows, whole_rows = torch.arange(len(active), device=device), True
            else:
                if step.index is not None:
                    mask = mask[step.index]
                    cache.select_rows(step.index)
                if padded:  # without padding the mask is all ones and is never passed
                    mask = torch.cat([mask, mask.new_ones(len(active), 1)], dim=1)
                inputs, whole_rows = step.new_tokens, False
            timing.decode_s += time.perf_counter() - started
