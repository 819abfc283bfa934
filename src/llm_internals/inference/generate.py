"""Autoregressive generation: prefill the prompt once, then decode one token per step.

    prefill:  hidden = model(prompt)             every prompt position at once, K/V cached
    loop:     logits = lm_head(hidden[last])     only the last position predicts the next token
              token  = sampler(logits)           greedy / temperature / top-k / top-p / min-p
              stop?  eos, stop token or string, max_new_tokens, or the context window is full
              hidden = model(token, cache)       one new position, attending to all cached K/V

With `use_cache=False` every step runs the model over the whole sequence again (the O(n^2)
baseline the cache removes); the tokens are the same. Prompts of different lengths are padded
(left by default, as HF does; right works too) into one batch with an attention_mask; the model
counts positions over real tokens only, so padding changes no result. A sequence that finishes
leaves the batch (its cache rows are dropped) while the others continue.

Finish reasons: "length" (max_new_tokens reached), "eos" (the end-of-text token, not part of the
output), "stop" (a stop token id or stop string from SamplingParams; the text is cut before it),
"context" (the next token would sit past the model's max_seq_len).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from llm_internals.errors import LLMInternalsError
from llm_internals.explain.trace import is_recording, record
from llm_internals.inference.kv_cache import ContiguousKVCache
from llm_internals.inference.params import SamplingParams
from llm_internals.inference.sampling import Sampler, make_generator
from llm_internals.inference.stopping import IncrementalDetokenizer, StopChecker

FINISH_REASONS = ("length", "stop", "eos", "context")
PADDING_SIDES = ("left", "right")
GREEDY = SamplingParams(temperature=0.0)


@dataclass
class StreamChunk:
    """One sampled token of sequence `index`, the text it made safe to show (may be ""), and the
    finish reason when this token ended the sequence."""

    index: int
    token_id: int
    text: str
    finish_reason: str | None = None


@dataclass
class Timing:
    """Seconds spent in the first forward (prefill) and in all later steps (decode)."""

    prefill_s: float = 0.0
    decode_s: float = 0.0
    decode_steps: int = 0
    tokens: int = 0  # tokens sampled, all sequences together

    @property
    def tokens_per_s(self) -> float:
        total = self.prefill_s + self.decode_s
        return self.tokens / total if total > 0 else 0.0


@dataclass
class GenerationResult:
    """One prompt's output. token_ids excludes an eos or stop token; text is None when no
    tokenizer was given."""

    prompt_ids: list[int]
    token_ids: list[int]
    text: str | None
    finish_reason: str
    timing: Timing = field(default_factory=Timing)


class _Sequence:
    """One prompt's state during generation: outputs, its generator, detokenizer, stop rules."""

    def __init__(
        self,
        index: int,
        prompt_ids: list[int],
        params: SamplingParams,
        tokenizer: Any | None,
        eos_ids: frozenset[int],
        max_new_tokens: int,
        context: int,
    ) -> None:
        self.index = index
        self.prompt_ids = prompt_ids
        self.params = params
        self.output_ids: list[int] = []
        self.steps = 0
        self.finish_reason: str | None = None
        self.generator = make_generator(params.seed)
        self.eos_ids = eos_ids
        self.max_new_tokens = max_new_tokens
        self.context = context
        self.detokenizer = (
            IncrementalDetokenizer(tokenizer.decode, prompt_ids) if tokenizer is not None else None
        )
        self.checker = StopChecker(params.stop)

    def accept(self, token: int) -> StreamChunk:
        """Take one sampled token; decide whether the sequence is finished."""
        self.steps += 1
        reason = None
        if token in self.eos_ids:
            reason = "eos"
        elif token in self.params.stop_token_ids:
            reason = "stop"
        else:
            self.output_ids.append(token)
            new_text = self.detokenizer.push(token) if self.detokenizer is not None else ""
            if self.checker.update(token, new_text):
                reason = "stop"
            if reason is None and self.steps >= self.max_new_tokens:
                reason = "length"
            # The token just sampled sits at position total - 1; feeding it needs that < context.
            if reason is None and len(self.prompt_ids) + len(self.output_ids) > self.context:
                reason = "context"
        if reason is not None:
            self.finish(reason)
        text = ""
        if self.detokenizer is not None:
            text = self.checker.take_ready_text(final=reason is not None)
        return StreamChunk(self.index, token, text, self.finish_reason)

    def finish(self, reason: str) -> None:
        if self.detokenizer is not None and reason != "stop":
            rest = self.detokenizer.flush()  # an incomplete character held back, if any
            if rest and self.checker.update(-1, rest):
                reason = "stop"
        self.finish_reason = reason

    @property
    def text(self) -> str | None:
        return self.checker.text if self.detokenizer is not None else None


def _as_prompts(prompt: Any, tokenizer: Any | None) -> tuple[list[list[int]], bool]:
    """(token ids of each prompt, whether a single prompt was given)."""
    if isinstance(prompt, torch.Tensor):
        prompt = prompt.tolist()
    single = isinstance(prompt, str) or (
        isinstance(prompt, Sequence) and bool(prompt) and isinstance(prompt[0], int)
    )
    items = [prompt] if single else prompt
    if not isinstance(items, Sequence) or isinstance(items, str) or len(items) == 0:
        raise LLMInternalsError(
            "prompt must be a non-empty string, a list of token ids, or a list of either",
            hint='e.g. generate(model, tokenizer, "Once upon a time")',
        )
    prompts = []
    for i, item in enumerate(items):
        if isinstance(item, str):
            if tokenizer is None:
                raise LLMInternalsError(
                    f"prompt {i} is text but no tokenizer was given",
                    hint="pass the model's tokenizer, or token ids",
                )
            ids = list(tokenizer.encode(item))
        elif isinstance(item, Sequence) and all(
            isinstance(t, int) and not isinstance(t, bool) for t in item
        ):
            ids = list(item)
        else:
            raise LLMInternalsError(
                f"prompt {i} must be a string or a list of token ids, got {type(item).__name__}"
            )
        if not ids:
            raise LLMInternalsError(
                f"prompt {i} is empty: generation needs at least one token to continue from",
                hint="start from a newline or the tokenizer's beginning-of-text token",
            )
        prompts.append(ids)
    return prompts, single


def _as_params(
    params: SamplingParams | Sequence[SamplingParams] | None, sampling: dict[str, Any], n: int
) -> list[SamplingParams]:
    if params is not None and sampling:
        raise LLMInternalsError(
            f"give either params or sampling keywords ({', '.join(sampling)}), not both"
        )
    if params is None:
        try:
            params = SamplingParams(**sampling) if sampling else GREEDY
        except TypeError as err:
            raise LLMInternalsError(f"unknown sampling parameter: {err}") from None
    if isinstance(params, SamplingParams):
        return [params] * n
    params = list(params)
    if len(params) != n or not all(isinstance(p, SamplingParams) for p in params):
        raise LLMInternalsError(
            f"params must be one SamplingParams or a list of {n} (one per prompt), "
            f"got {len(params)} item(s)"
        )
    return params


def _eos_ids(eos_token_id: Any, tokenizer: Any | None) -> frozenset[int]:
    if eos_token_id == "auto":
        eot = getattr(tokenizer, "eot_id", None) if tokenizer is not None else None
        return frozenset() if eot is None else frozenset([eot])
    if eos_token_id is None:
        return frozenset()
    if isinstance(eos_token_id, int):
        return frozenset([eos_token_id])
    return frozenset(int(t) for t in eos_token_id)


def _check_request(
    model: torch.nn.Module, prompts: list[list[int]], max_new_tokens: int, padding_side: str
) -> int:
    """Validate; return the model's context length."""
    if not hasattr(model, "config") or not hasattr(model, "hidden_states"):
        raise LLMInternalsError(
            f"generate needs a decoder language model (DecoderLM), got {type(model).__name__}"
        )
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or (
        max_new_tokens <= 0
    ):  # fmt: skip
        raise LLMInternalsError(
            f"max_new_tokens must be a positive integer, got {max_new_tokens!r}"
        )
    if padding_side not in PADDING_SIDES:
        raise LLMInternalsError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    context = model.config.max_seq_len
    for i, ids in enumerate(prompts):
        if len(ids) > context:
            raise LLMInternalsError(
                f"prompt {i} has {len(ids)} tokens, more than the model's context of {context}",
                hint=f"shorten the prompt (or keep its last {context} tokens)",
            )
    return context


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
    **sampling: Any,
) -> Iterator[StreamChunk]:
    """Generate, yielding a StreamChunk per sampled token as soon as it is sampled.

    prompt: a string, a list of token ids, or a list of strings / id lists (a batch).
    params: one SamplingParams for all prompts or one per prompt; default greedy. Instead of
        params, SamplingParams fields may be given as keywords (temperature=0.8, top_k=40, seed=1);
        a seed seeds each prompt's own generator, so a prompt's draws do not depend on the batch.
    eos_token_id: "auto" (the tokenizer's end-of-text token), None, an id or a list of ids.
    timing: filled in with prefill/decode seconds (generator time only, not the consumer's).
    """
    seqs, _ = _prepare(model, tokenizer, prompt, max_new_tokens, params, eos_token_id,
                       padding_side, sampling)  # fmt: skip
    return _decode_loop(model, seqs, use_cache, padding_side, timing or Timing())


def _prepare(
    model: torch.nn.Module,
    tokenizer: Any | None,
    prompt: Any,
    max_new_tokens: int,
    params: SamplingParams | Sequence[SamplingParams] | None,
    eos_token_id: Any,
    padding_side: str,
    sampling: dict[str, Any],
) -> tuple[list[_Sequence], bool]:
    """Check the request (errors before any work) and set up one _Sequence per prompt."""
    prompts, single = _as_prompts(prompt, tokenizer)
    params_list = _as_params(params, sampling, len(prompts))
    context = _check_request(model, prompts, max_new_tokens, padding_side)
    if tokenizer is None and any(p.stop for p in params_list):
        raise LLMInternalsError("stop strings need a tokenizer to decode the output")
    eos = _eos_ids(eos_token_id, tokenizer)
    seqs = [
        _Sequence(i, ids, p, tokenizer, eos, max_new_tokens, context)
        for i, (ids, p) in enumerate(zip(prompts, params_list, strict=True))
    ]
    return seqs, single


def _pad(prompts: list[list[int]], side: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ids, attention_mask, index of each row's last real token), padded to one width."""
    width = max(len(p) for p in prompts)
    ids = torch.zeros((len(prompts), width), dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    last = []
    for row, prompt in enumerate(prompts):
        start = width - len(prompt) if side == "left" else 0
        ids[row, start : start + len(prompt)] = torch.tensor(prompt)
        mask[row, start : start + len(prompt)] = 1
        last.append(start + len(prompt) - 1)
    return ids, mask, torch.tensor(last)


def _decode_loop(
    model: torch.nn.Module,
    seqs: list[_Sequence],
    use_cache: bool,
    padding_side: str,
    timing: Timing,
) -> Iterator[StreamChunk]:
    device = next(model.parameters()).device
    ids, mask, last = _pad([s.prompt_ids for s in seqs], padding_side)
    ids, mask, last = ids.to(device), mask.to(device), last.to(device)
    padded = not bool(mask.all())
    cache = None
    if use_cache:
        shortest = min(len(s.prompt_ids) for s in seqs)
        steps = min(seqs[0].max_new_tokens - 1, seqs[0].context - shortest)
        cache = ContiguousKVCache.for_model(model, len(seqs), ids.shape[1] + max(steps, 0))
    sampler = Sampler()
    active = list(seqs)  # row r of the current batch is active[r]
    inputs = ids
    rows = torch.arange(len(seqs), device=device)
    was_training = model.training
    model.eval()
    prefill = True
    try:
        while True:
            started = time.perf_counter()
            with torch.inference_mode():
                hidden = model.hidden_states(
                    inputs, attention_mask=mask if padded else None, cache=cache
                )
                # At prefill, each row's last real token (right padding: not column -1).
                hidden_last = hidden[rows, last] if prefill else hidden[:, -1]
                logits = model.lm_head(hidden_last)
                tokens = sampler(
                    logits,
                    [s.params for s in active],
                    [s.generator for s in active],
                    prompt_ids=[s.prompt_ids for s in active],
                    output_ids=[s.output_ids for s in active],
                ).tolist()
            if is_recording():
                record("generate.tokens", torch.tensor(tokens), note="one token per sequence")
            chunks = [s.accept(t) for s, t in zip(active, tokens, strict=True)]
            elapsed = time.perf_counter() - started
            if prefill:
                timing.prefill_s, prefill = elapsed, False
            else:
                timing.decode_s += elapsed
                timing.decode_steps += 1
            timing.tokens += len(tokens)
            yield from chunks

            started = time.perf_counter()
            keep = [r for r, s in enumerate(active) if s.finish_reason is None]
            if not keep:
                return
            new_tokens = torch.tensor(tokens, device=device)[:, None]
            if len(keep) < len(active):
                index = torch.tensor(keep, device=device)
                active = [active[r] for r in keep]
                new_tokens, ids, mask = new_tokens[index], ids[index], mask[index]
                rows = rows[: len(keep)]
                if cache is not None:
                    cache.select_rows(index)
            mask = torch.cat([mask, mask.new_ones(len(active), 1)], dim=1)
            if cache is not None:
                inputs = new_tokens
            else:  # no cache: the whole sequence again
                ids = torch.cat([ids, new_tokens], dim=1)
                inputs = ids
            timing.decode_s += time.perf_counter() - started
    finally:
        model.train(was_training)


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
    **sampling: Any,
) -> GenerationResult | list[GenerationResult]:
    """Generate to the end and return the result (a list of results for a list of prompts).

    Same arguments as `stream`; see there. Greedy unless sampling parameters are given.
    """
    seqs, single = _prepare(model, tokenizer, prompt, max_new_tokens, params, eos_token_id,
                            padding_side, sampling)  # fmt: skip
    timing = Timing()
    for _chunk in _decode_loop(model, seqs, use_cache, padding_side, timing):
        pass
    results = [
        GenerationResult(s.prompt_ids, s.output_ids, s.text, s.finish_reason, timing) for s in seqs
    ]
    return results[0] if single else results
