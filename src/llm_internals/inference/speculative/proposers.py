"""Where draft tokens come from: a smaller model (`DraftModelProposer`) or the text itself
(`NgramProposer`, prompt lookup). Both follow the protocol in the package docstring:
`propose(rows) -> Proposal` and `select_rows(index)`.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from llm_internals.errors import LLMInternalsError
from llm_internals.inference.params import SamplingParams
from llm_internals.inference.sampling import Sampler, inverse_cdf_sample
from llm_internals.inference.speculative.row_cache import RowCache
from llm_internals.trace import is_recording


@dataclass
class DraftRow:
    """What a proposer needs to know about one sequence: its tokens so far (prompt_ids then
    output_ids), how many drafts to propose (gamma, >= 0), and how it samples."""

    prompt_ids: list[int]
    output_ids: list[int]
    gamma: int
    params: SamplingParams
    generator: torch.Generator | None = None

    @property
    def history(self) -> list[int]:
        return self.prompt_ids + self.output_ids


@dataclass
class Proposal:
    """Drafts for a batch. tokens: (batch, g) int64, row r's drafts in its first num_drafts[r]
    entries (the rest is padding); q: (batch, g, V) the draft distributions they were drawn from
    (after the row's sampling parameters), or None for deterministic drafts (one-hot q)."""

    tokens: torch.Tensor
    num_drafts: torch.Tensor
    q: torch.Tensor | None

    def drafts(self) -> list[list[int]]:
        """Each row's drafts as a list."""
        return [t[:n] for t, n in zip(self.tokens.tolist(), self.num_drafts.tolist(),
                                      strict=True)]  # fmt: skip


def argmax_only(params: Sequence[SamplingParams]) -> bool:
    """Every row greedy without penalties (and no recording to show the steps): the argmax of
    the raw logits is the token, as in the Sampler's shortcut, and no softmax is needed."""
    return all(p.greedy and not p.uses_penalties for p in params) and not is_recording()


def row_uniforms(
    generators: Sequence[torch.Generator | None], counts: Sequence[int], width: int
) -> torch.Tensor:
    """(batch, width) float64: row r's first counts[r] entries are Uniform[0, 1) draws from its
    own generator (None: torch's global one), the rest 0. Drawing exactly what a row uses keeps
    a seeded row's draws independent of the rest of the batch."""
    uniforms = torch.zeros(len(counts), width, dtype=torch.float64)
    shared = [row for row, g in enumerate(generators) if g is None and counts[row] > 0]
    if shared:  # one call for the rows that share torch's global generator
        drawn = torch.rand(len(shared), width, dtype=torch.float64)
        for i, row in enumerate(shared):
            uniforms[row, : counts[row]] = drawn[i, : counts[row]]
    for row, (generator, count) in enumerate(zip(generators, counts, strict=True)):
        if generator is not None and count > 0:
            device = "cpu" if generator is None else generator.device
            uniforms[row, :count] = torch.rand(
                count, dtype=torch.float64, generator=generator, device=device
            ).cpu()
    return uniforms


class DraftModelProposer:
    """A smaller DecoderLM with the target's tokenizer drafts `gamma` tokens autoregressively,
    sampling each from q = its distribution after the row's sampling parameters (penalties see
    the drafts before it). Its KV cache (a RowCache) rolls back to the accepted tokens at the
    start of the next `propose`, so only the tokens it has not seen are fed: the last emitted
    token (and the last draft when all were accepted: it was never fed)."""

    deterministic = False

    def __init__(self, draft_model: torch.nn.Module, batch: int, capacity: int) -> None:
        self.model = draft_model
        self.rows = RowCache(draft_model, batch, capacity)
        self.sampler = Sampler()
        self.forwards = 0

    def propose(self, rows: list[DraftRow]) -> Proposal:
        gamma = max(r.gamma for r in rows)
        vocab = self.model.config.vocab_size
        tokens = torch.zeros(len(rows), gamma, dtype=torch.long)
        q = torch.zeros(len(rows), gamma, vocab)
        num_drafts = torch.tensor([r.gamma for r in rows])
        if gamma == 0:
            return Proposal(tokens, num_drafts, q)
        params = [r.params for r in rows]
        greedy = torch.tensor([p.greedy for p in params])
        uniforms = row_uniforms([r.generator for r in rows], [r.gamma for r in rows], gamma)
        chunks = self.rows.prepare([r.history for r in rows])
        for i in range(gamma):
            hidden = self.rows.forward(chunks)[:, -1]
            self.forwards += 1
            logits = self.model.lm_head(hidden).float()
            if argmax_only(params):  # q is not needed: greedy verification reads only p
                x = logits.argmax(dim=-1).cpu()
            else:
                drafted = tokens[:, :i].tolist()
                filtered, probs = self.sampler.distribution(
                    logits, params, [r.prompt_ids for r in rows],
                    [r.output_ids + d for r, d in zip(rows, drafted, strict=True)],
                )  # fmt: skip
                drawn = inverse_cdf_sample(probs, uniforms[:, i])
                x = torch.where(greedy.to(logits.device), filtered.argmax(dim=-1), drawn).cpu()
                q[:, i] = probs.cpu()
            tokens[:, i] = x
            # Feed x_i only to rows that draft past it (a row's last draft is never fed: only
            # the target scores it; feeding it could also pass the context).
            chunks = [[t] if i + 1 < r.gamma else [] for t, r in zip(x.tolist(), rows,
                                                                    strict=True)]  # fmt: skip
        return Proposal(tokens, num_drafts, q)

    def select_rows(self, index: list[int]) -> None:
        self.rows.select_rows(index)


def ngram_lookup(tokens: list[int], min_n: int, max_n: int, k: int) -> list[int]:
    """Prompt lookup, as vLLM's "ngram" method (vllm/v1/spec_decode/ngram_proposer.py): find
    the longest n in [min_n, max_n] whose last-n-token suffix also occurs earlier in `tokens`;
    at its earliest occurrence, propose the (up to) k tokens that followed it. [] if none.

    The search runs in C: the ids as int64 bytes, `bytes.find` for the suffix, and a hit counts
    only at a multiple of 8 bytes (a token boundary)."""
    length = len(tokens)
    if k <= 0 or length < 2:
        return []
    data = array("q", tokens).tobytes()
    for n in range(min(max_n, length - 1), min_n - 1, -1):
        suffix = data[(length - n) * 8 :]
        at = data.find(suffix, 0, (length - 1) * 8)  # occurrences that end before the last token
        while at >= 0 and at % 8:
            at = data.find(suffix, at + 1, (length - 1) * 8)
        if at >= 0:
            start = at // 8 + n
            return tokens[start : start + k]
    return []


class NgramProposer:
    """Drafts copied from the text itself (prompt lookup; no draft model): deterministic, so
    q is one-hot and a draft x is accepted with probability p(x). It may propose fewer than
    gamma tokens, or none."""

    deterministic = True

    def __init__(self, min_n: int = 1, max_n: int = 3) -> None:
        for name, value in (("min", min_n), ("max", max_n)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise LLMInternalsError(
                    f"n-gram size {name} must be an integer >= 1, got {value!r}",
                    hint=f"--ngram-{name} takes a positive integer",
                )
        if min_n > max_n:
            raise LLMInternalsError(
                f"n-gram sizes: min {min_n} is larger than max {max_n}",
                hint="give --ngram-min <= --ngram-max",
            )
        self.min_n, self.max_n = min_n, max_n
        self.forwards = 0

    def propose(self, rows: list[DraftRow]) -> Proposal:
        found = [ngram_lookup(r.history, self.min_n, self.max_n, r.gamma) for r in rows]
        width = max((len(f) for f in found), default=0)
        tokens = torch.zeros(len(rows), width, dtype=torch.long)
        for row, drafts in enumerate(found):
            tokens[row, : len(drafts)] = torch.tensor(drafts, dtype=torch.long)
        return Proposal(tokens, torch.tensor([len(f) for f in found]), None)

    def select_rows(self, index: list[int]) -> None:
        """Stateless: nothing to drop."""
