"""Speculative decoding inside continuous batching: draft, verify in the packed forward, roll back.

Per step, for every decoding sequence (docs/serving.md, "Speculative decoding"):

    plan      k = min(gamma, max_tokens left - 1, context left): the scheduler reserves slots
              for the last token + k draft tokens (fewer when the budget or the free blocks
              are short: a draft never preempts anybody); n-gram drafts are looked up here
    propose   the draft model drafts k tokens for all scheduled speculating sequences at once
              (paged/draft_model.py); the batch then feeds last token + draft like a prefill
              chunk, and the runner returns target logits at all k + 1 positions
    verify    exact rejection sampling (inference/speculative/rejection.py), with each
              sequence's SamplingParams applied to p and q alike and its own generator;
              greedy accepts while the draft equals the target's argmax
    commit    the sequence keeps n accepted drafts + 1 token; computed count = tokens - 1;
              blocks past it freed; only then are full blocks hashed into the prefix cache, so
              a block holding a rejected draft token is never registered; the draft's own
              cache rolls back likewise

Prefills and non-speculating decodes share the same step. Parallel sampling (n > 1) is not
combined with speculation: such requests are refused (`check_request`).
"""

from __future__ import annotations

from typing import Any

import torch

from llm_internals.errors import LLMInternalsError
from llm_internals.inference.paged.block_manager import BlockManager
from llm_internals.inference.paged.draft_model import PagedDraftModel, load_draft
from llm_internals.inference.paged.scheduler import ScheduledBatch
from llm_internals.inference.paged.sequence import Sequence
from llm_internals.inference.sampling import Sampler, invalid_rows
from llm_internals.inference.speculative.adaptive import GammaSchedule
from llm_internals.inference.speculative.proposers import DraftRow, NgramProposer
from llm_internals.inference.speculative.rejection import verify
from llm_internals.inference.speculative.stats import SpeculativeStats

DEFAULT_GAMMA = 4


class Speculation:
    """The engine's speculative decoding: plan, propose, verify, commit (module docstring)."""

    def __init__(
        self,
        gamma: int,
        max_seq_len: int,
        draft: PagedDraftModel | None = None,
        ngram: NgramProposer | None = None,
        adaptive: bool = False,
    ) -> None:
        self.gamma = gamma
        self.adaptive = adaptive
        self.max_seq_len = max_seq_len
        self.draft = draft
        self.ngram = ngram
        self.sampler = Sampler()
        method = "draft-model" if draft is not None else "ngram"
        self.stats = SpeculativeStats(method=method, gamma=gamma, adaptive=adaptive)
        self._schedules: dict[int, GammaSchedule] = {}  # per sequence (adaptive gamma)
        self._q: dict[int, torch.Tensor | None] = {}

    def plan(self, running: list[Sequence]) -> None:
        """Set each running sequence's num_lookahead (and its n-gram draft) for the scheduler."""
        lookups = []
        for seq in running:
            seq.num_lookahead, seq.draft_token_ids = 0, []
            if seq.num_uncomputed_tokens != 1 or seq.pending_forks:
                continue
            schedule = self._schedules.get(seq.seq_id)
            if schedule is None:
                schedule = self._schedules[seq.seq_id] = GammaSchedule(self.gamma, self.adaptive)
            k = min(schedule.gamma, seq.max_tokens - seq.sampled - 1,
                    self.max_seq_len - seq.num_tokens)  # fmt: skip
            seq.num_lookahead = max(k, 0)
            if self.ngram is not None and k > 0:
                lookups.append(seq)
        if lookups:  # prompt lookup: a draft only where the text repeats itself
            rows = [DraftRow(s.prompt_token_ids, s.output_token_ids, s.num_lookahead, s.params)
                    for s in lookups]  # fmt: skip
            for seq, draft in zip(lookups, self.ngram.propose(rows).drafts(), strict=True):
                seq.draft_token_ids, seq.num_lookahead = draft, len(draft)

    def propose(self, batch: ScheduledBatch) -> None:
        """Draft tokens for the sequences scheduled with speculative slots; each one's
        num_new_tokens becomes 1 + its draft length (the slots past it are freed at commit)."""
        speculating = []
        for i, (seq, n) in enumerate(zip(batch.seqs, batch.num_new_tokens, strict=True)):
            seq.num_lookahead = 0
            if n > 1 and seq.num_uncomputed_tokens == 1:
                speculating.append((i, seq, n - 1))
            else:
                seq.draft_token_ids = []
        for seq in batch.preempted:
            self.release(seq)
        if self.draft is not None and speculating:
            drafts = self.draft.propose([s for _, s, _ in speculating],
                                        [k for _, _, k in speculating])  # fmt: skip
            for (_, seq, _), tokens, q in zip(speculating, drafts.tokens, drafts.q, strict=True):
                seq.draft_token_ids = tokens
                self._q[seq.seq_id] = q
        for i, seq, k in speculating:
            seq.draft_token_ids = seq.draft_token_ids[:k]
            batch.num_new_tokens[i] = 1 + len(seq.draft_token_ids)

    def verify(
        self, row_seqs: list[Sequence], row_logits: torch.Tensor
    ) -> list[tuple[Sequence, list[int] | str]]:
        """(sequence, the tokens it keeps) for each speculating sequence among the rows (its
        k + 1 consecutive target logits rows give the accepted drafts, then the residual or
        bonus token), or why its logits cannot be sampled. One batched verification for the
        greedy rows and one for the sampled ones."""
        rows_of: dict[Sequence, list[int]] = {}
        for row, seq in enumerate(row_seqs):
            if seq.draft_token_ids:
                rows_of.setdefault(seq, []).append(row)
        seqs, logits = list(rows_of), [row_logits[rows] for rows in rows_of.values()]
        results: list[list[int] | str] = [[] for _ in seqs]
        self.stats.target_forwards += 1
        valid = []
        for i, rows in enumerate(logits):
            bad = invalid_rows(rows)
            if bad:
                row, why = next(iter(bad.items()))
                results[i] = f"logits at draft position {row} {why}"
            else:
                valid.append(i)
        plain = [i for i in valid if seqs[i].params.greedy and not seqs[i].params.uses_penalties]
        if plain:
            self._verify_group([seqs[i] for i in plain], [logits[i] for i in plain], results, plain,
                               greedy=True)  # fmt: skip
        filtered = [i for i in valid if i not in set(plain)]
        if filtered:
            group = [seqs[i] for i in filtered]
            params, prompts, histories = [], [], []
            for seq in group:
                draft = seq.draft_token_ids
                for j in range(len(draft) + 1):
                    params.append(seq.params)
                    prompts.append(seq.prompt_token_ids)
                    histories.append(seq.output_token_ids + draft[:j])
            with torch.inference_mode():
                rows, probs = self.sampler.distribution(
                    torch.cat([logits[i] for i in filtered]).float(), params, prompts, histories
                )
            sizes = [len(seq.draft_token_ids) + 1 for seq in group]
            for greedy in (True, False):
                members = [j for j, seq in enumerate(group) if seq.params.greedy == greedy]
                source = (rows if greedy else probs).split(sizes)
                if members:
                    self._verify_group([group[j] for j in members], [source[j] for j in members],
                                       results, [filtered[j] for j in members], greedy)  # fmt: skip
        return list(zip(seqs, results, strict=True))

    def _verify_group(self, seqs: list[Sequence], p: list[torch.Tensor], results: list,
                      slots: list[int], greedy: bool) -> None:  # fmt: skip
        """verify() on a padded batch: p rows (k_i + 1, vocab) each (probabilities, or logits
        when greedy); the result of seqs[j] goes to results[slots[j]]."""
        gamma = max(len(seq.draft_token_ids) for seq in seqs)
        batch, vocab = len(seqs), p[0].shape[-1]
        p_target = p[0].new_zeros(batch, gamma + 1, vocab)
        tokens = torch.zeros(batch, gamma, dtype=torch.long)
        num_drafts = torch.tensor([len(seq.draft_token_ids) for seq in seqs])
        q_draft = None if greedy or self.draft is None else p_target.new_zeros(batch, gamma, vocab)
        uniforms = None if greedy else torch.zeros(batch, gamma + 1, dtype=torch.float64)
        for j, seq in enumerate(seqs):
            k = len(seq.draft_token_ids)
            p_target[j, : k + 1] = p[j]
            tokens[j, :k] = torch.tensor(seq.draft_token_ids)
            q = self._q.pop(seq.seq_id, None)
            if q_draft is not None:
                q_draft[j, :k] = q[:k]
            if uniforms is not None:  # r_1..r_k, then the draw's, from the sequence's generator
                u = torch.rand(k + 1, dtype=torch.float64, generator=seq.generator)
                uniforms[j, :k], uniforms[j, gamma] = u[:k], u[k]
        verdict = verify(p_target, q_draft, tokens.to(p_target.device), greedy=greedy,
                         num_drafts=num_drafts, uniforms=uniforms)  # fmt: skip
        accepted, next_tokens = verdict.num_accepted.tolist(), verdict.next_token.tolist()
        for j, seq in enumerate(seqs):
            self.stats.add_round(len(seq.draft_token_ids), accepted[j], accepted[j] + 1)
            self._schedules[seq.seq_id].update(len(seq.draft_token_ids), accepted[j])
            results[slots[j]] = seq.draft_token_ids[: accepted[j]] + [next_tokens[j]]

    def commit(self, seq: Sequence, block_manager: BlockManager) -> None:
        """Roll a verified, unfinished sequence back to its kept tokens (module docstring)."""
        seq.num_computed_tokens = seq.num_tokens - 1
        seq.draft_token_ids = []
        block_manager.truncate(seq)
        block_manager.register_full_blocks(seq)
        if self.draft is not None:
            self.draft.commit(seq)

    def release(self, seq: Sequence) -> None:
        """seq left the running batch (finished, aborted, preempted): drop its draft state."""
        seq.draft_token_ids, seq.num_lookahead = [], 0
        self._q.pop(seq.seq_id, None)
        if seq.is_finished:  # a preempted sequence keeps its acceptance estimate
            self._schedules.pop(seq.seq_id, None)
        if self.draft is not None:
            self.draft.release(seq)


def build_speculation(
    target: torch.nn.Module,
    tokenizer: Any | None,
    *,
    speculative_model: Any | None,
    speculative_ngram: bool,
    num_speculative_tokens: int | None,
    adaptive_gamma: bool = False,
    block_size: int,
    num_blocks: int,
    max_num_seqs: int,
) -> Speculation | None:
    """The engine's Speculation from its arguments (None: off), or LLMInternalsError naming the
    flag (`--speculative-model`, `--speculative-ngram`, `--num-speculative-tokens`) and values."""
    if speculative_model is None and not speculative_ngram:
        if num_speculative_tokens is not None:
            raise LLMInternalsError(
                f"--num-speculative-tokens {num_speculative_tokens} needs a draft",
                hint="add --speculative-model PATH or --speculative-ngram",
            )
        return None
    if speculative_model is not None and speculative_ngram:
        raise LLMInternalsError(
            "--speculative-model and --speculative-ngram exclude each other",
            hint="give one draft source",
        )
    gamma = DEFAULT_GAMMA if num_speculative_tokens is None else num_speculative_tokens
    if isinstance(gamma, bool) or not isinstance(gamma, int) or gamma < 1:
        raise LLMInternalsError(
            f"--num-speculative-tokens must be an integer >= 1, got {gamma!r}",
            hint="draft at least one token per step (4 is a common choice)",
        )
    max_seq_len = target.config.max_seq_len
    if speculative_ngram:
        return Speculation(gamma, max_seq_len, ngram=NgramProposer(), adaptive=adaptive_gamma)
    draft_model = load_draft(speculative_model, target, tokenizer)
    per_seq = -(-(gamma + 1) // block_size) + 1
    draft = PagedDraftModel(draft_model, block_size, num_blocks + max_num_seqs * per_seq)
    return Speculation(gamma, max_seq_len, draft=draft, adaptive=adaptive_gamma)
