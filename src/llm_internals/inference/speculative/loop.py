"""The speculative generation loop behind `generate(..., draft_model=...)` / `ngram=...`.

One round, for every active sequence at once:

    1. propose    gamma_r drafts per row (draft model or n-gram lookup); gamma_r is the
                  schedule's gamma (adaptive.py), clipped so the drafts stay inside the context
                  and inside max_new_tokens (the last emitted token needs no draft)
    2. score      ONE target forward over each row's unseen tokens plus its drafts, giving
                  p_1..p_{g+1} (RowCache: rows right-aligned, holes masked)
    3. verify     p and q both after the row's sampling parameters (Sampler.distribution: the
                  penalties at position i see the drafts before i); rejection.verify (greedy
                  rows: argmax agreement)
    4. emit       the accepted drafts and the next token go through the sequence core one at a
                  time (eos, stop ids/strings, max tokens, context): a stop inside the accepted
                  run ends the sequence there and drops the rest
    5. roll back  both caches: at the next round's `prepare`, each row keeps the longest prefix
                  of its cached tokens that is still its text, i.e. the accepted length

Rows advance by different amounts (the choice of masking over per-row caches is explained in
row_cache.py); finished rows leave the batch.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import torch

from llm_internals.errors import LLMInternalsError
from llm_internals.inference.decode_loop import evaluating
from llm_internals.inference.generation_types import StreamChunk, Timing
from llm_internals.inference.sampling import Sampler, invalid_rows
from llm_internals.inference.sequence_state import SequenceState
from llm_internals.inference.speculative.adaptive import GammaSchedule
from llm_internals.inference.speculative.config import SpeculativeConfig
from llm_internals.inference.speculative.proposers import (
    DraftModelProposer,
    DraftRow,
    NgramProposer,
    Proposal,
    argmax_only,
    row_uniforms,
)
from llm_internals.inference.speculative.rejection import verify
from llm_internals.inference.speculative.row_cache import RowCache


def speculative_loop(
    model: torch.nn.Module, seqs: list[SequenceState], timing: Timing, config: SpeculativeConfig
) -> Iterator[StreamChunk]:
    """Yield one StreamChunk per emitted token until every sequence has finished (both models
    in eval mode meanwhile)."""
    with evaluating(model):
        if config.draft_model is None:
            yield from _rounds(model, seqs, timing, config)
        else:
            with evaluating(config.draft_model):
                yield from _rounds(model, seqs, timing, config)


def _rounds(
    model: torch.nn.Module, seqs: list[SequenceState], timing: Timing, config: SpeculativeConfig
) -> Iterator[StreamChunk]:
    gamma_max = config.num_speculative_tokens
    longest = max(len(s.decoder_ids) for s in seqs)
    capacity = longest + 2 * (seqs[0].max_new_tokens + gamma_max + 2)
    if config.draft_model is not None:
        proposer = DraftModelProposer(config.draft_model, len(seqs), capacity)
    else:
        proposer = NgramProposer(*config.ngram)
    stats = config.stats
    stats.method = "ngram" if config.draft_model is None else "draft-model"
    stats.gamma, stats.adaptive = gamma_max, config.adaptive_gamma
    schedules = [GammaSchedule(gamma_max, config.adaptive_gamma) for _ in seqs]
    target = RowCache(model, len(seqs), capacity)
    sampler = Sampler()
    active = list(seqs)
    prefill = True
    while active:
        started = time.perf_counter()
        rows = [
            DraftRow(s.decoder_ids, s.output_ids, clip_gamma(s, schedules[s.row].gamma),
                     s.params, s.generator)
            for s in active
        ]  # fmt: skip
        with torch.inference_mode():
            drafted_before = proposer.forwards
            proposal = proposer.propose(rows)
            p_logits = score(target, rows, proposal)
            emitted = verify_rows(sampler, p_logits, rows, proposal)
        stats.target_forwards += 1
        stats.draft_forwards += proposer.forwards - drafted_before
        chunks: list[StreamChunk] = []
        for r, (s, tokens) in enumerate(zip(active, emitted, strict=True)):
            proposed = int(proposal.num_drafts[r])
            stats.add_round(proposed, len(tokens) - 1, len(tokens))
            schedules[s.row].update(proposed, len(tokens) - 1)
            for token in tokens:
                chunks.append(s.accept_chunk(token))
                if s.finish_reason is not None:
                    break  # a stop inside the accepted run: the rest is dropped
        timing.add_step(time.perf_counter() - started, len(chunks), prefill)
        prefill = False
        yield from chunks
        keep = [r for r, s in enumerate(active) if s.finish_reason is None]
        if len(keep) < len(active) and keep:
            proposer.select_rows(keep)
            target.select_rows(keep)
        active = [active[r] for r in keep]


def clip_gamma(seq: SequenceState, gamma: int) -> int:
    """Drafts that can still be used: every draft must sit inside the model's context (the
    drafts of a sequence with N tokens occupy positions N..N+g-1, so g <= context - N), and the
    round emits one token after them, so at most max_new_tokens - sampled - 1 of them."""
    room = seq.model_context - seq.decoder_length
    remaining = seq.max_tokens - seq.sampled - 1
    return max(0, min(gamma, room, remaining))


def score(target: RowCache, rows: list[DraftRow], proposal: Proposal) -> torch.Tensor:
    """One target forward over each row's unseen tokens and its drafts: the logits at the last
    unseen token and at every draft, (batch, g + 1, V), row r's in its first num_drafts[r] + 1
    entries."""
    unseen = target.prepare([r.history for r in rows])
    drafts = proposal.drafts()
    hidden = target.forward([u + d for u, d in zip(unseen, drafts, strict=True)])
    width = proposal.tokens.shape[1] + 1
    counts = torch.tensor([len(d) + 1 for d in drafts], device=hidden.device)
    # Row r's g_r + 1 positions are its last ones; gather them to the front.
    columns = hidden.shape[1] - counts[:, None] + torch.arange(width, device=hidden.device)
    columns = columns.clamp(max=hidden.shape[1] - 1)
    picked = hidden.gather(1, columns[..., None].expand(-1, -1, hidden.shape[-1]))
    return target.model.lm_head(picked).float()


def verify_rows(
    sampler: Sampler, p_logits: torch.Tensor, rows: list[DraftRow], proposal: Proposal
) -> list[list[int]]:
    """p at every scored position after each row's sampling parameters, then the verdicts
    (greedy rows and sampled rows separately); returns each row's emitted tokens."""
    batch, width, vocab = p_logits.shape
    flat_rows = [(r, i) for r in range(batch) for i in range(int(proposal.num_drafts[r]) + 1)]
    flat = p_logits[[r for r, _ in flat_rows], [i for _, i in flat_rows]]
    bad = invalid_rows(flat)
    if bad:
        r, i = flat_rows[next(iter(bad))]
        raise LLMInternalsError(
            f"the target's logits for prompt {r} {bad[next(iter(bad))]}: nothing to sample",
            hint="the model produced invalid logits (check the weights for NaN, or overflow "
            "in --dtype float16)",
        )
    drafts = proposal.tokens.tolist()
    if argmax_only([r.params for r in rows]):
        filtered = probs = flat  # greedy rows read only the argmax of the raw logits
    else:
        filtered, probs = sampler.distribution(
            flat, [rows[r].params for r, _ in flat_rows],
            [rows[r].prompt_ids for r, _ in flat_rows],
            [rows[r].output_ids + drafts[r][:i] for r, i in flat_rows],
        )  # fmt: skip
    index = torch.tensor([r * width + i for r, i in flat_rows])
    p = torch.zeros(batch * width, vocab, dtype=probs.dtype, device=probs.device)
    p_greedy = torch.zeros_like(p)
    p[index], p_greedy[index] = probs, filtered  # greedy rows: argmax of the filtered logits
    p, p_greedy = p.view(batch, width, vocab).cpu(), p_greedy.view(batch, width, vocab).cpu()

    emitted: list[list[int]] = [[] for _ in range(batch)]
    greedy = [r for r in range(batch) if rows[r].params.greedy]
    sampled = [r for r in range(batch) if not rows[r].params.greedy]
    for subset, is_greedy in ((greedy, True), (sampled, False)):
        if not subset:
            continue
        uniforms = None
        if not is_greedy:
            counts = [int(proposal.num_drafts[r]) for r in subset]
            drawn = row_uniforms([rows[r].generator for r in subset], [c + 1 for c in counts],
                                 width)  # fmt: skip
            uniforms = torch.zeros(len(subset), width, dtype=torch.float64)
            for j, c in enumerate(counts):  # r_1..r_g, then the draw's uniform in the last column
                uniforms[j, :c], uniforms[j, -1] = drawn[j, :c], drawn[j, c]
        verdict = verify(
            (p_greedy if is_greedy else p)[subset],
            None if proposal.q is None or is_greedy else proposal.q[subset],
            proposal.tokens[subset],
            num_drafts=proposal.num_drafts[subset],
            uniforms=uniforms,
            greedy=is_greedy,
        )
        for j, tokens in enumerate(verdict.emitted(proposal.tokens[subset])):
            emitted[subset[j]] = tokens
    return emitted
