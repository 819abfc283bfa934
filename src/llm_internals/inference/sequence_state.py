"""One prompt's state during `generate`: the sequence core plus the prompt and its batch row."""

from __future__ import annotations

from typing import Any

from llm_internals.inference.generation_types import StreamChunk
from llm_internals.inference.params import SamplingParams
from llm_internals.inference.sequence_core import SequenceCore


class SequenceState(SequenceCore):
    """Accepts sampled tokens one at a time (SequenceCore's stop rules) as StreamChunks.

    `decoder_ids` are the tokens already in the decoder before the first sampled one: the prompt
    for a decoder-only model, [decoder_start_token_id] for an encoder-decoder (whose prompt is the
    source sentence, read by the encoder). `context` is the model's max_seq_len; with a sliding
    window the sequence never stops for it (`limit_context=False`). `row` numbers the prompt in
    the request (StreamChunk.index); each prompt is its request's only sample, so a seed gives
    it the same draws alone or in any batch.
    """

    def __init__(
        self,
        row: int,
        prompt_ids: list[int],
        params: SamplingParams,
        tokenizer: Any | None,
        eos_ids: frozenset[int],
        max_new_tokens: int,
        context: int,
        decoder_ids: list[int] | None = None,
        limit_context: bool = True,
    ) -> None:
        self.prompt_ids = prompt_ids
        self.max_new_tokens = max_new_tokens
        self.model_context = context
        super().__init__(
            prompt_ids if decoder_ids is None else decoder_ids,
            params,
            tokenizer=tokenizer,
            eos_ids=eos_ids,
            max_tokens=max_new_tokens,
            context=context if limit_context else None,
            text_context=None if decoder_ids is None else (),
        )
        self.row = row

    def accept_chunk(self, token: int) -> StreamChunk:
        """Take one sampled token (see SequenceCore.accept) and say what it made visible."""
        text = self.accept(token)
        return StreamChunk(self.row, token, text, self.finish_reason)
