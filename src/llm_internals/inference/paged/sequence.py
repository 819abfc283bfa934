"""One sample of one request, as the serving engine tracks it from arrival to its last token.

A request ("continue this prompt, n samples") becomes one `Sequence` on arrival. Its life:

    WAITING --admitted--> RUNNING --eos / stop / length / context / error--> FINISHED
       ^                     |
       +---- preempted ------+   (blocks freed; the tokens so far are recomputed later)

What ends a sample is decided by the sequence core that `generate` uses too
(inference/sequence_core.py), so both paths give the same tokens, text and finish reasons.

Token bookkeeping, for a sequence of prompt + output tokens:

    token_ids:            p0 p1 p2 p3 p4 o0 o1          (num_tokens = 7)
    num_computed_tokens:  |<--- K/V in the cache --->|   (6: o1 is fed at the next step)
    block_table:          [7, 2]  with block_size 4: positions 0-3 in block 7, 4-7 in block 2

Each step feeds the tokens from num_computed_tokens on (a prefill chunk, or the one newest token
when decoding) and, once every token has K/V, samples the next token. With n > 1 the prompt is
prefilled once; at the first sample the sequence forks into n samples that share its blocks
(copy-on-write keeps them apart later).
"""

from __future__ import annotations

import enum
import itertools
import time
from dataclasses import dataclass, field
from typing import Any

from llm_internals.inference.params import SamplingParams
from llm_internals.inference.sequence_core import SequenceCore


class SequenceStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass
class RequestMetrics:
    """Wall-clock times (time.perf_counter seconds) of one sample's life.

    token_latencies[i] is the time from token i-1 (or from arrival, for i = 0) to token i.
    """

    arrival_time: float
    first_scheduled_time: float | None = None
    first_token_time: float | None = None
    last_token_time: float | None = None
    finished_time: float | None = None
    token_latencies: list[float] = field(default_factory=list)

    @property
    def time_to_first_token(self) -> float | None:
        if self.first_token_time is None:
            return None
        return self.first_token_time - self.arrival_time

    def token_arrived(self, now: float) -> None:
        previous = self.arrival_time if self.last_token_time is None else self.last_token_time
        self.token_latencies.append(now - previous)
        if self.first_token_time is None:
            self.first_token_time = now
        self.last_token_time = now


_ids = itertools.count()


class Sequence(SequenceCore):
    """The state of one sample: its tokens, how many have K/V stored, its block table, and what
    decides when it stops (SequenceCore: eos ids, stop tokens and strings, max_tokens, the
    context window)."""

    def __init__(
        self,
        request_id: str,
        prompt_token_ids: list[int],
        params: SamplingParams,
        *,
        arrival_order: int,
        arrival_time: float | None = None,
        index: int = 0,
        tokenizer: Any | None = None,
        eos_ids: frozenset[int] = frozenset(),
        max_seq_len: int | None = None,
    ) -> None:
        super().__init__(
            prompt_token_ids,
            params,
            tokenizer=tokenizer,
            eos_ids=eos_ids,
            max_tokens=params.max_tokens,
            context=max_seq_len,
            index=index,
        )
        self.seq_id = next(_ids)
        self.request_id = request_id
        self.prompt_token_ids = self.decoder_ids
        self.token_ids = list(prompt_token_ids)
        self.arrival_order = arrival_order
        self.status = SequenceStatus.WAITING
        self.num_computed_tokens = 0
        self.block_table: list[int] = []
        self.block_hashes: list[int] = []  # chained hash of each full block, in order
        self.pending_forks = params.n - 1  # samples still to split off at the first token
        self.num_preemptions = 0
        # Speculative decoding (paged/speculation.py): draft tokens wanted at the next step, and
        # the draft proposed for it; they are fed after token_ids, never part of them.
        self.num_lookahead = 0
        self.draft_token_ids: list[int] = []
        self.metrics = RequestMetrics(time.perf_counter() if arrival_time is None else arrival_time)

    # --- token counts ---------------------------------------------------------------------
    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_token_ids)

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def output_token_ids(self) -> list[int]:
        return self.output_ids

    @property
    def num_uncomputed_tokens(self) -> int:
        """Tokens still to feed before the next token can be sampled."""
        return self.num_tokens - self.num_computed_tokens

    def scheduled_ids(self, start: int, end: int) -> list[int]:
        """The tokens fed at positions start..end-1: token_ids, then the draft tokens."""
        if end <= self.num_tokens:
            return self.token_ids[start:end]
        return (self.token_ids[start:] + self.draft_token_ids)[: end - start]

    @property
    def is_finished(self) -> bool:
        return self.status is SequenceStatus.FINISHED

    @property
    def seats(self) -> int:
        """Slots this sequence takes of max_num_seqs: itself plus the samples it will fork."""
        return 1 + self.pending_forks

    @property
    def order_key(self) -> tuple[int, int]:
        """First come, first served: arrival order, then sample index."""
        return (self.arrival_order, self.index)

    @property
    def text(self) -> str:
        return self.checker.text if self.detokenizer is not None else ""

    # --- parallel sampling ----------------------------------------------------------------
    def fork(self, index: int) -> Sequence:
        """A new sample of the same request sharing everything computed so far (the caller
        increments the reference counts of the shared blocks). Forks happen at the first
        sample, before any output."""
        child = Sequence.__new__(Sequence)
        child.__dict__.update(self.__dict__)
        child.seq_id = next(_ids)
        child.token_ids = list(self.token_ids)
        child.block_table = list(self.block_table)
        child.block_hashes = list(self.block_hashes)
        child.pending_forks = 0
        child.draft_token_ids = []
        child.metrics = RequestMetrics(self.metrics.arrival_time, self.metrics.first_scheduled_time)
        child.start_sample(index)
        return child

    # --- accepting a sampled token --------------------------------------------------------
    def append_token(self, token: int, now: float) -> str:
        """Take a sampled token (SequenceCore.accept); set finish_reason when it ends the
        sample. Returns the text that became safe to stream."""
        self.metrics.token_arrived(now)
        kept = len(self.output_ids)
        text = self.accept(token)
        if len(self.output_ids) > kept:
            self.token_ids.append(token)
        return text
