"""The scheduler: which sequences run in the next forward, and how many tokens each feeds.

Continuous batching: the batch is rebuilt at every step, so a finished sequence leaves at once
and a waiting one joins as soon as there is room, instead of a whole batch waiting for its
longest member. One step's budget is `max_num_batched_tokens` tokens over at most
`max_num_seqs` sequences:

    1. running sequences, first come first served: a decoding one feeds 1 token (1 + its draft
       tokens when it speculates: paged/speculation.py), one still in its prompt feeds a chunk
       (chunked prefill: a long prompt is spread over several steps, leaving a token of budget
       for every decode behind it, so decodes never stall);
    2. then waiting ones, first come first served, while budget, seats and blocks last; a new
       sequence starts from its longest cached prefix (those tokens need no compute).

Out of blocks while growing a running sequence: preempt the newest running sequence (free its
blocks; it goes back to the waiting queue and recomputes its tokens later, often partly from the
prefix cache), repeating until the block fits; when the sequence itself is the newest, it
preempts itself. The oldest sequence can always finish because the engine rejects, on arrival,
any request whose tokens could not fit in the whole pool.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from llm_internals.inference.paged.block_manager import BlockManager
from llm_internals.inference.paged.sequence import Sequence, SequenceStatus


@dataclass
class ScheduledBatch:
    """One step's work: seqs[i] feeds num_new_tokens[i] tokens from its num_computed_tokens.

    copies: (source, destination) block copies (copy-on-write) to run before the forward.
    """

    seqs: list[Sequence] = field(default_factory=list)
    num_new_tokens: list[int] = field(default_factory=list)
    copies: list[tuple[int, int]] = field(default_factory=list)
    preempted: list[Sequence] = field(default_factory=list)

    @property
    def num_tokens(self) -> int:
        return sum(self.num_new_tokens)

    def __bool__(self) -> bool:
        return bool(self.seqs)


class Scheduler:
    """FCFS continuous batching with chunked prefill and preemption by recomputation."""

    def __init__(
        self, block_manager: BlockManager, max_num_seqs: int, max_num_batched_tokens: int
    ) -> None:
        self.block_manager = block_manager
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.waiting: list[Sequence] = []  # sorted by order_key
        self.running: list[Sequence] = []  # sorted by order_key
        self.num_preemptions = 0

    def add(self, seq: Sequence) -> None:
        seq.status = SequenceStatus.WAITING
        bisect.insort(self.waiting, seq, key=lambda s: s.order_key)

    def add_running(self, seq: Sequence) -> None:
        """A forked sample joins the running set directly (its blocks are shared)."""
        seq.status = SequenceStatus.RUNNING
        bisect.insort(self.running, seq, key=lambda s: s.order_key)

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running)

    def finish(self, seq: Sequence) -> None:
        """Remove a finished or aborted sequence and free its blocks."""
        if seq in self.running:
            self.running.remove(seq)
        elif seq in self.waiting:
            self.waiting.remove(seq)
        self.block_manager.free(seq)
        seq.status = SequenceStatus.FINISHED

    def schedule(self) -> ScheduledBatch:
        batch = ScheduledBatch()
        budget = self.max_num_batched_tokens
        scheduled: set[int] = set()
        decodes_behind = sum(1 for s in self.running if s.num_uncomputed_tokens == 1)
        for seq in list(self.running):
            if seq.num_uncomputed_tokens == 1:
                decodes_behind -= 1  # the decodes after this one (preempted ones included)
            if seq.status is not SequenceStatus.RUNNING:  # preempted earlier in this loop
                continue
            wanted = seq.num_uncomputed_tokens
            num_new = wanted if wanted == 1 else min(wanted, budget - decodes_behind)
            num_new = min(num_new, budget)
            if num_new <= 0:
                continue
            if not self._make_room(seq, num_new, scheduled, batch):
                continue  # seq preempted itself
            if wanted == 1 and seq.num_lookahead:
                num_new = self._speculative_slots(seq, budget - decodes_behind)
            batch.copies += self.block_manager.reserve(seq, num_new)
            batch.seqs.append(seq)
            batch.num_new_tokens.append(num_new)
            scheduled.add(seq.seq_id)
            budget -= num_new

        seats = sum(s.seats for s in self.running)
        while self.waiting and budget > 0 and not batch.preempted:
            seq = self.waiting[0]
            if seats + seq.seats > self.max_num_seqs:
                break
            hits = self.block_manager.match_prefix(seq)
            num_new = min(seq.num_tokens - len(hits) * self.block_manager.block_size, budget)
            needed = self.block_manager.blocks_to_admit(hits, seq, num_new)
            if needed > self.block_manager.num_available_blocks:
                break  # FCFS: nobody overtakes the head of the queue
            self.waiting.pop(0)
            self.block_manager.admit(seq, hits)
            batch.copies += self.block_manager.reserve(seq, num_new)
            seq.status = SequenceStatus.RUNNING
            bisect.insort(self.running, seq, key=lambda s: s.order_key)
            batch.seqs.append(seq)
            batch.num_new_tokens.append(num_new)
            scheduled.add(seq.seq_id)
            budget -= num_new
            seats += seq.seats
        return batch

    def _speculative_slots(self, seq: Sequence, budget: int) -> int:
        """1 + the draft tokens a decoding sequence can verify this step: its num_lookahead,
        cut to the budget left and to the blocks available now (a draft never preempts)."""
        num_new = max(1, min(1 + seq.num_lookahead, budget))
        manager = self.block_manager
        while num_new > 1 and manager.blocks_needed(seq, num_new) > manager.num_available_blocks:
            num_new -= 1
        return num_new

    def _make_room(
        self, seq: Sequence, num_new: int, scheduled: set[int], batch: ScheduledBatch
    ) -> bool:
        """Preempt the newest unscheduled running sequences until seq's blocks fit; False when
        seq itself had to be preempted."""
        manager = self.block_manager
        while manager.blocks_needed(seq, num_new) > manager.num_available_blocks:
            victims = [s for s in self.running if s.seq_id not in scheduled and s is not seq]
            victim = victims[-1] if victims and victims[-1].order_key > seq.order_key else seq
            self._preempt(victim)
            batch.preempted.append(victim)
            if victim is seq:
                return False
        return True

    def _preempt(self, seq: Sequence) -> None:
        """Free seq's blocks and queue it again; its tokens so far are recomputed later."""
        self.running.remove(seq)
        self.block_manager.free(seq)
        seq.num_preemptions += 1
        self.num_preemptions += 1
        self.add(seq)
