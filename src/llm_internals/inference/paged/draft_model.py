"""The draft model of speculative decoding inside the engine: its own small paged KV pool.

The draft model has other layers and widths than the target, so its K/V cannot live in the
target's pool. It gets a second `PagedKVCache` shaped for it, its own `BlockManager` (no prefix
caching) and its own `ModelRunner`: the same packed forward the target uses, so the draft steps
of all speculating sequences run batched, one forward per draft position:

    round 0   every sequence feeds what its draft cache lacks (the prompt on its first round, else
              the 1-2 tokens accepted at the last verification) and samples x_1 from q_1
    round i   every sequence still drafting feeds x_i and samples x_{i+1} from q_{i+1}

A `DraftState` is the draft's view of one engine sequence: the same tokens, its own computed
count and block table. After verification the state rolls back to the accepted length (K/V
past it are of rejected drafts): `commit`. A finished, aborted or preempted sequence releases
its draft blocks at once (`release`). Pool size: the target pool's block count plus room for
every running sequence's draft tail, so it runs out only when prefix-cache sharing lets the
target hold more tokens than blocks; a sequence whose draft cannot get blocks then simply does
not speculate that step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from llm_internals.errors import LLMInternalsError
from llm_internals.inference.paged.block_manager import BlockManager
from llm_internals.inference.paged.model_runner import ModelRunner
from llm_internals.inference.paged.paged_cache import PagedKVCache
from llm_internals.inference.paged.scheduler import ScheduledBatch
from llm_internals.inference.paged.sequence import Sequence
from llm_internals.inference.sampling import Sampler, invalid_rows, inverse_cdf_sample
from llm_internals.inference.speculative.config import (
    SpeculativeConfig,
    check_same_tokenizer,
    check_speculative,
)


@dataclass
class DraftState:
    """What the draft's runner and block manager read of one sequence (a `Sequence`'s shape)."""

    seq_id: int
    request_id: str
    index: int
    token_ids: list[int]
    num_computed_tokens: int = 0
    block_table: list[int] = field(default_factory=list)
    block_hashes: list[int] = field(default_factory=list)

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    def scheduled_ids(self, start: int, end: int) -> list[int]:
        return self.token_ids[start:end]


@dataclass
class Drafts:
    """One proposal per sequence: tokens (k,) and, for sampled rows, q (k, vocab)."""

    tokens: list[list[int]]
    q: list[torch.Tensor | None]


class PagedDraftModel:
    """Proposes draft tokens for many sequences at once with a small model and its own pool."""

    def __init__(self, model: torch.nn.Module, block_size: int, num_blocks: int) -> None:
        self.model = model.eval()
        self.cache = PagedKVCache.for_model(model, block_size, num_blocks)
        self.blocks = BlockManager(num_blocks, block_size, enable_prefix_caching=False)
        self.runner = ModelRunner(model, self.cache)
        self.sampler = Sampler()
        self.states: dict[int, DraftState] = {}

    def propose(self, seqs: list[Sequence], lengths: list[int]) -> Drafts:
        """Up to lengths[i] draft tokens for seqs[i], drawn with its SamplingParams and its
        generator (fewer when the draft pool is full or its logits cannot be sampled)."""
        states = [self._sync(seq) for seq in seqs]
        wanted = list(lengths)
        for i, state in enumerate(states):  # room for every position this proposal feeds
            feed = state.num_tokens - state.num_computed_tokens + wanted[i] - 1
            if self.blocks.blocks_needed(state, feed) > self.blocks.num_available_blocks:
                wanted[i] = 0
            else:
                self.blocks.reserve(state, feed)
        tokens: list[list[int]] = [[] for _ in seqs]
        q_rows: list[list[torch.Tensor]] = [[] for _ in seqs]
        for position in range(max(wanted, default=0)):
            active = [i for i, k in enumerate(wanted) if k > position]
            if not active:
                break
            batch = ScheduledBatch()
            for i in active:
                state = states[i]
                batch.seqs.append(state)
                batch.num_new_tokens.append(state.num_tokens - state.num_computed_tokens)
            row_states, logits = self.runner.execute(batch)  # rows in the runner's order
            for state, n in zip(batch.seqs, batch.num_new_tokens, strict=True):
                state.num_computed_tokens += n
            order = {state.seq_id: i for i, state in enumerate(states)}
            active = [order[state.seq_id] for state in row_states]
            drawn, q = self._draw([seqs[i] for i in active], [tokens[i] for i in active], logits)
            for row, i in enumerate(active):
                if drawn[row] is None:  # logits that cannot be sampled: the draft ends here
                    wanted[i] = position
                    continue
                tokens[i].append(drawn[row])
                states[i].token_ids.append(drawn[row])
                if q is not None:
                    q_rows[i].append(q[row])
        return Drafts(tokens, [torch.stack(r) if r else None for r in q_rows])

    def commit(self, seq: Sequence) -> None:
        """Roll seq's draft state back to what the target accepted: K/V of the positions whose
        token the target kept, blocks past them released."""
        state = self.states.get(seq.seq_id)
        if state is None:
            return
        # The draft fed last, x_1..x_{k-1}; the target kept last, x_1..x_n, then its own token:
        # the fed positions before that token hold the same tokens, so their K/V stay.
        state.num_computed_tokens = min(state.num_computed_tokens, seq.num_tokens - 1)
        del state.token_ids[state.num_computed_tokens :]
        self.blocks.truncate(state)

    def release(self, seq: Sequence) -> None:
        """Free seq's draft blocks (finished, aborted or preempted)."""
        state = self.states.pop(seq.seq_id, None)
        if state is not None:
            self.blocks.free(state)

    def _sync(self, seq: Sequence) -> DraftState:
        state = self.states.get(seq.seq_id)
        if state is None:
            state = DraftState(seq.seq_id, seq.request_id, seq.index, [])
            self.states[seq.seq_id] = state
        del state.token_ids[state.num_computed_tokens :]
        state.token_ids.extend(seq.token_ids[state.num_computed_tokens :])
        return state

    def _draw(
        self, seqs: list[Sequence], drafted: list[list[int]], logits: torch.Tensor
    ) -> tuple[list[int | None], torch.Tensor | None]:
        """One draft token per row from q (the draft's logits through the same penalties,
        temperature and truncation as the target's p), and q itself (None: all greedy)."""
        params = [s.params for s in seqs]
        bad = invalid_rows(logits)
        logits = logits.float()
        if bad:
            logits = logits.masked_fill(torch.isnan(logits), 0.0).clamp(-1e30, 1e30)
        if all(p.greedy and not p.uses_penalties for p in params):
            drawn = logits.argmax(dim=-1).tolist()
            return [None if r in bad else t for r, t in enumerate(drawn)], None
        histories = [s.output_token_ids + d for s, d in zip(seqs, drafted, strict=True)]
        with torch.inference_mode():
            filtered, q = self.sampler.distribution(
                logits, params, [s.prompt_token_ids for s in seqs], histories
            )
        drawn = filtered.argmax(dim=-1)
        sampled = [row for row, seq in enumerate(seqs) if not seq.params.greedy]
        if sampled:  # one uniform per row from the sequence's own generator, one draw for all
            u = torch.cat([torch.rand(1, dtype=torch.float64, generator=seqs[row].generator)
                           for row in sampled])  # fmt: skip
            drawn[sampled] = inverse_cdf_sample(q[sampled], u)
        return [None if r in bad else t for r, t in enumerate(drawn.tolist())], q


def load_draft(speculative_model: Any, target: torch.nn.Module, tokenizer: Any | None) -> Any:
    """The draft model (a folder is loaded where the target's weights are, in their dtype),
    checked as `generate` checks its draft (inference/speculative/config.py: a decoder with the
    target's vocabulary, context and tokenizer); errors name --speculative-model."""
    draft_tokenizer = None
    weight = next(target.parameters())
    try:
        if isinstance(speculative_model, (str, Path)):
            from llm_internals.inference.decode_layout import use_decode_layout
            from llm_internals.models.loading import load_model_and_tokenizer

            model, draft_tokenizer, _ = load_model_and_tokenizer(
                Path(speculative_model), None, device=weight.device, dtype=weight.dtype,
                require_tokenizer=False,
            )  # fmt: skip
            if weight.device.type == "cpu":
                model = use_decode_layout(model)
        else:
            model = speculative_model
        check_speculative(target, SpeculativeConfig(draft_model=model))
        if tokenizer is not None and draft_tokenizer is not None:
            check_same_tokenizer(tokenizer, draft_tokenizer, model.config.vocab_size)
    except LLMInternalsError as err:
        name = f" {speculative_model}" if isinstance(speculative_model, (str, Path)) else ""
        raise LLMInternalsError(
            f"--speculative-model{name}: {err.message} (the target is --model)",
            hint="give a draft trained with --model's tokenizer, or --speculative-ngram",
        ) from None
    return model.eval()
