"""One prompt's state during generation: its outputs, generator, detokenizer and stop rules."""

from __future__ import annotations

from typing import Any

from llm_internals.inference.generation_types import StreamChunk
from llm_internals.inference.params import SamplingParams
from llm_internals.inference.sampling import make_generator
from llm_internals.inference.stopping import IncrementalDetokenizer, StopChecker


class SequenceState:
    """Accepts sampled tokens one at a time and decides when the sequence is finished.

    `decoder_ids` are the tokens already in the decoder before the first sampled one: the prompt
    for a decoder-only model, [decoder_start_token_id] for an encoder-decoder (whose prompt is the
    source sentence, read by the encoder). They set the context limit, the penalties' history and
    the detokenizer's left context.
    """

    def __init__(
        self,
        index: int,
        prompt_ids: list[int],
        params: SamplingParams,
        tokenizer: Any | None,
        eos_ids: frozenset[int],
        max_new_tokens: int,
        context: int,
        decoder_ids: list[int] | None = None,
    ) -> None:
        self.index = index
        self.prompt_ids = prompt_ids
        self.decoder_ids = prompt_ids if decoder_ids is None else decoder_ids
        self.params = params
        self.output_ids: list[int] = []
        self.steps = 0
        self.finish_reason: str | None = None
        self.generator = make_generator(params.seed)
        self.eos_ids = eos_ids
        self.max_new_tokens = max_new_tokens
        self.context = context
        self.detokenizer = (
            IncrementalDetokenizer(tokenizer.decode, prompt_ids if decoder_ids is None else ())
            if tokenizer is not None
            else None
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
            if reason is None and len(self.decoder_ids) + len(self.output_ids) > self.context:
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
