"""The one sequence core of both inference paths: accept a sampled token, decide when to stop.

`generate` (inference/sequence_state.py) and the serving engine (inference/paged/sequence.py)
both build on `SequenceCore`, so a request finishes for the same reason, with the same tokens and
text, whichever path runs it. Per sampled token, in this order:

    1. eos        an end-of-text id (unless params.ignore_eos)     token not kept   -> "eos"
    2. stop id    one of params.stop_token_ids                     token not kept   -> "stop"
    3. keep it    append to output_ids; detokenize it; search the text for a stop
                  string (it may span tokens; the text is cut before it)           -> "stop"
    4. length     max_tokens sampled                                                -> "length"
    5. context    the token just kept sits at position `context`: feeding it back
                  would go past the model's window (not checked with a sliding
                  window, which crops the oldest tokens instead)                    -> "context"

A sequence can also end with "abort" (the engine's caller gave up on it) or "error" (its logits
could not be sampled: NaN or infinite values; `error` says why). FINISH_REASONS is the table;
docs/serving.md lists it beside the OpenAI server's names for them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from llm_internals.inference.params import MAX_SEED, SamplingParams
from llm_internals.inference.sampling import make_generator
from llm_internals.inference.stopping import IncrementalDetokenizer, StopChecker

FINISH_REASONS = {
    "eos": "an end-of-text token was sampled (it is not part of the output)",
    "stop": "a stop token id or stop string was sampled (the text is cut before it)",
    "length": "max_tokens (generate: max_new_tokens) tokens were sampled",
    "context": "the context window is full: the next token would sit past max_seq_len",
    "abort": "the request was aborted (engine only)",
    "error": "the logits could not be sampled (NaN or infinite values; engine only)",
}
ENGINE_ONLY_REASONS = ("abort", "error")  # generate raises instead of failing one prompt


def sample_generator(seed: int | None, index: int = 0) -> torch.Generator | None:
    """Sample i of a seeded request draws from seed + i, so samples differ but reproduce."""
    return None if seed is None else make_generator((seed + index) % (MAX_SEED + 1))


class SequenceCore:
    """One sample's output and stop rules.

    decoder_ids: the tokens in the decoder before the first sampled one (the prompt of a
        decoder-only model; [decoder_start_token_id] for an encoder-decoder). They count toward
        the context and are the penalties' history.
    text_context: tokens the detokenizer decodes the first output token after (the prompt, or
        nothing for an encoder-decoder, whose prompt is in another language).
    context: the model's max_seq_len, or None for no limit (a sliding window).
    """

    def __init__(
        self,
        decoder_ids: Sequence[int],
        params: SamplingParams,
        *,
        tokenizer: Any | None,
        eos_ids: frozenset[int],
        max_tokens: int,
        context: int | None,
        text_context: Sequence[int] | None = None,
        index: int = 0,
    ) -> None:
        self.decoder_ids = list(decoder_ids)
        self.params = params
        self.tokenizer = tokenizer
        self.eos_ids = frozenset() if params.ignore_eos else frozenset(eos_ids)
        self.max_tokens = max_tokens
        self.context = context
        self.text_context = self.decoder_ids if text_context is None else list(text_context)
        self.start_sample(index)

    def start_sample(self, index: int) -> None:
        """(Re)start the per-sample state: no output yet, sample `index`'s own generator."""
        self.index = index
        self.output_ids: list[int] = []
        self.sampled = 0  # tokens sampled, counting an eos or stop token
        self.finish_reason: str | None = None
        self.error: str | None = None
        self.generator = sample_generator(self.params.seed, index)
        self.detokenizer = (
            IncrementalDetokenizer(self.tokenizer.decode, self.text_context)
            if self.tokenizer is not None
            else None
        )
        self.checker = StopChecker(self.params.stop)

    def accept(self, token: int) -> str:
        """Take one sampled token; set finish_reason when it ends the sample. Returns the text
        that became safe to stream (held back while it could still start a stop string)."""
        self.sampled += 1
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
            elif self.sampled >= self.max_tokens:
                reason = "length"
            elif self.context is not None and self.decoder_length > self.context:
                reason = "context"  # the token just kept would be fed at position `context`
        if reason is not None:
            self.finish(reason)
        if self.detokenizer is None:
            return ""
        return self.checker.take_ready_text(final=reason is not None)

    def finish(self, reason: str) -> None:
        """End the sample; an incomplete character held back is flushed (it may complete a stop
        string, which turns the reason into "stop")."""
        if self.detokenizer is not None and reason not in ("stop", "error"):
            rest = self.detokenizer.flush()
            if rest and self.checker.update(-1, rest):
                reason = "stop"
        self.finish_reason = reason

    def fail(self, error: str) -> None:
        """End the sample with reason "error" (its logits could not be sampled)."""
        self.error = error
        self.finish("error")

    @property
    def decoder_length(self) -> int:
        """Tokens in the decoder: decoder_ids and the kept output."""
        return len(self.decoder_ids) + len(self.output_ids)

    @property
    def text(self) -> str | None:
        """The output text (cut before a stop string); None without a tokenizer."""
        return self.checker.text if self.detokenizer is not None else None
