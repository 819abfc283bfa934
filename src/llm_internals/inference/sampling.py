"""From next-token logits to a token id: penalties, temperature, top-k, top-p, min-p, a draw.

For each row of a (batch, vocab) logits tensor, with that row's `SamplingParams`:

    z  = penalties(logits)                   (penalties.py: repetition, frequency, presence)
    z  = z / T                               temperature; T = 0 means greedy: argmax(z)
    keep only the top-k, then the top-p nucleus, then the min-p survivors (others -> -inf)
    p  = softmax(z)                          renormalized over the kept tokens
    token = the first index whose cumulative probability exceeds u ~ Uniform[0, 1)

The order (temperature, top-k, top-p, min-p) is the one HF transformers uses. The last step is
inverse-transform sampling: one uniform number per row, drawn from the request's own
`torch.Generator` when it has a seed, so a seeded request draws the same tokens whatever else is
in the batch. The filters (truncation.py) each return a boolean "kept" mask; all steps are
recorded for the explain path under the names "sampling.<step>".

Extreme parameters survive. Penalties run in float64 (|z| < 3.4e38 from float32 logits and a
repetition penalty of at least 1.2e-38 keep z / r below 3e76). Where z / T would not fit in
float32 (a tiny T), the row maximum is subtracted first, in float64 (softmax does not change):
the other logits go to -inf (probability 0, the greedy limit) instead of the row overflowing to
+inf and NaN. A row that still cannot be sampled (NaN or +inf logits from the model, or nothing
finite) raises `SamplingRowError`, which names the rows and carries the tokens of the others: the
serving engine fails those requests alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from llm_internals.errors import LLMInternalsError
from llm_internals.inference.params import FLOAT32_MAX, SamplingParams
from llm_internals.inference.penalties import (
    apply_frequency_presence_penalty,
    apply_repetition_penalty,
    token_counts,
)
from llm_internals.inference.truncation import min_p_mask, top_k_mask, top_p_mask
from llm_internals.layers.softmax import softmax
from llm_internals.trace import is_recording, record


class SamplingRowError(LLMInternalsError):
    """Some rows of a batch could not be sampled. `rows` maps row -> why; `tokens` holds the
    tokens drawn for the other rows (-1 at the failed ones)."""

    def __init__(self, rows: dict[int, str], tokens: torch.Tensor) -> None:
        row, why = next(iter(rows.items()))
        super().__init__(
            f"logits row {row} {why}: nothing to sample"
            + (f" (and {len(rows) - 1} more row(s))" if len(rows) > 1 else ""),
            hint="the model produced invalid logits (check the weights for NaN, or overflow "
            "in --dtype float16)",
        )
        self.rows = rows
        self.tokens = tokens


def make_generator(seed: int | None, device: torch.device | str = "cpu") -> torch.Generator | None:
    """A generator on `device` seeded with `seed`, or None (use the sampler's shared generator).

    The default is a CPU generator whatever device the logits are on: the sampler draws one
    uniform per row, so drawing on the CPU costs one tiny copy, and a seed then gives the same
    tokens on the CPU, CUDA and MPS (a CUDA generator's stream differs from the CPU's).
    """
    if seed is None:
        return None
    return torch.Generator(device=device).manual_seed(seed)


def _rand(n: int, generator: torch.Generator | None) -> torch.Tensor:
    """n float64 Uniform[0, 1) draws from `generator` (None: torch's global CPU generator), on
    the CPU."""
    device = "cpu" if generator is None else generator.device
    return torch.rand(n, dtype=torch.float64, generator=generator, device=device).cpu()


def inverse_cdf_sample(probs: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """Index i with cdf[i-1] <= u * total < cdf[i], for each row: P(i) = probs[i] / total.

    The cumulative sum runs in float64 so that rounding cannot shift mass between tokens, and a
    token of probability 0 can never be chosen (its cdf step has zero width). After top-k/top-p
    only a few tokens have probability, so (outside a recording) the sum runs over just those,
    kept in vocabulary order: adding the zeros in between changes no partial sum, so the same u
    picks the same token as the full sum would.
    """
    support = int((probs > 0).sum(dim=-1).max())
    if support * 2 < probs.shape[-1] and not is_recording():
        token_ids = probs.topk(support, dim=-1).indices.sort(dim=-1).values
        chosen = _inverse_cdf(probs.gather(-1, token_ids), uniforms)
        return token_ids.gather(-1, chosen[:, None]).squeeze(-1)
    return _inverse_cdf(probs, uniforms)


def _inverse_cdf(probs: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    cdf = probs.double().cumsum(dim=-1)
    record("sampling.cdf", cdf, note="cumulative probabilities in vocabulary order")
    targets = (uniforms.double().to(probs.device) * cdf[:, -1])[:, None]
    chosen = torch.searchsorted(cdf, targets, right=True).squeeze(-1).clamp(max=cdf.shape[-1] - 1)
    # u * total can round up to total itself (u just below 1): then step back to the last token
    # that has probability, which is where the cumulative sum reached total.
    impossible = probs.gather(-1, chosen[:, None]).squeeze(-1) == 0
    if impossible.any():
        last_possible = cdf.argmax(dim=-1)  # first index where cdf reaches its maximum
        chosen = torch.where(impossible, last_possible, chosen)
    return chosen


def invalid_rows(logits: torch.Tensor) -> dict[int, str]:
    """Rows that cannot be sampled, with why: a NaN, a +inf (no distribution gives it a finite
    share), or no value above -inf. One pass finds them: the row maximum is finite only for the
    rows without any of these (NaN propagates through amax)."""
    suspect = (~torch.isfinite(logits.amax(dim=-1))).nonzero().flatten().tolist()
    reasons = {}
    for row in suspect:
        if torch.isnan(logits[row]).any():
            reasons[row] = "has NaN"
        elif (logits[row] == float("inf")).any():
            reasons[row] = "has +inf"
        else:
            reasons[row] = "has no finite value"
    return reasons


class Sampler:
    """Samples one token per row of a logits batch, each row with its own SamplingParams.

    `generator` is the shared generator for rows without a seeded generator of their own (None:
    torch's global generator).
    """

    def __init__(self, generator: torch.Generator | None = None) -> None:
        self.generator = generator

    def __call__(
        self,
        logits: torch.Tensor,
        params: Sequence[SamplingParams],
        generators: Sequence[torch.Generator | None] | None = None,
        prompt_ids: Sequence[Sequence[int]] | None = None,
        output_ids: Sequence[Sequence[int]] | None = None,
    ) -> torch.Tensor:
        """Token ids, int64 of shape (batch,).

        generators[i] (e.g. from `make_generator(params[i].seed)`) must persist across the
        steps of request i for its draws to be reproducible. prompt_ids / output_ids are needed
        only when some row uses a penalty. Rows whose logits cannot be sampled raise
        SamplingRowError after the other rows are drawn (their generators advance as usual).

        All-greedy batches without penalties take the argmax directly: the full path would give
        the same tokens (argmax of logits / 1) after a softmax over the vocabulary, which costs
        ~1-3 ms per step for a 50k vocabulary, several % of a batch-1 decode step. While
        recording (the explain path) the full path runs, so its steps are shown.
        """
        logits = self._check(logits, params, generators)
        bad = invalid_rows(logits)
        if not bad:
            return self._sample(logits, params, generators, prompt_ids, output_ids)
        good = [row for row in range(len(params)) if row not in bad]
        tokens = torch.full((len(params),), -1, dtype=torch.long, device=logits.device)
        if good:

            def rows(values: Sequence | None) -> list | None:
                return None if values is None else [values[r] for r in good]

            tokens[good] = self._sample(logits[good], rows(params), rows(generators),
                                        rows(prompt_ids), rows(output_ids))  # fmt: skip
        raise SamplingRowError(bad, tokens)

    def _sample(
        self,
        logits: torch.Tensor,
        params: Sequence[SamplingParams],
        generators: Sequence[torch.Generator | None] | None,
        prompt_ids: Sequence[Sequence[int]] | None,
        output_ids: Sequence[Sequence[int]] | None,
    ) -> torch.Tensor:
        greedy = [p.greedy for p in params]
        if all(greedy) and not any(p.uses_penalties for p in params) and not is_recording():
            return logits.argmax(dim=-1)
        record("sampling.logits", logits)
        logits, probs = self.distribution(logits, params, prompt_ids, output_ids)
        tokens = logits.argmax(dim=-1)
        sampled_rows = [row for row, g in enumerate(greedy) if not g]
        if sampled_rows:
            uniforms = self._uniforms(sampled_rows, generators)
            record("sampling.uniforms", uniforms, note="one Uniform[0, 1) draw per sampled row")
            tokens[sampled_rows] = inverse_cdf_sample(probs[sampled_rows], uniforms)
        record("sampling.tokens", tokens)
        return tokens

    def distribution(
        self,
        logits: torch.Tensor,
        params: Sequence[SamplingParams],
        prompt_ids: Sequence[Sequence[int]] | None = None,
        output_ids: Sequence[Sequence[int]] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(filtered logits, the probabilities drawn from) of valid float32 (batch, vocab)
        logits: penalties, temperature, top-k, top-p, min-p. Greedy rows are tempered by 1."""
        z = self._penalize(logits, params, prompt_ids, output_ids)  # float64 if penalized
        temperature = torch.tensor([[p.temperature if p.temperature > 0 else 1.0]
                                    for p in params], dtype=torch.float64,
                                   device=z.device)  # fmt: skip
        tempered = z / temperature.to(z.dtype)
        # +inf or NaN: z / T left float32 (a tiny T; below 1.4e-45 T itself rounds to 0).
        overflow = ~(tempered.amax(dim=-1, keepdim=True) <= FLOAT32_MAX)
        if overflow.any():  # shift those rows so the largest is 0 (the same softmax), in float64
            z64 = z.double()
            shifted = (z64 - z64.amax(dim=-1, keepdim=True)) / temperature  # overflow -> -inf
            tempered = torch.where(overflow, shifted.to(tempered.dtype), tempered)
        logits = tempered.float()
        record("sampling.tempered", logits, note="logits / temperature (greedy rows: / 1)")

        keep = torch.ones_like(logits, dtype=torch.bool)
        for name, values, active, mask_fn in (
            ("top_k", [p.top_k for p in params], lambda v: v > 0, top_k_mask),
            ("top_p", [p.top_p for p in params], lambda v: v < 1.0, top_p_mask),
            ("min_p", [p.min_p for p in params], lambda v: v > 0.0, min_p_mask),
        ):
            if any(active(v) for v in values):
                kept = mask_fn(logits, torch.tensor(values, device=logits.device))
                record(f"sampling.{name}_kept", kept)
                keep &= kept
                logits = logits.masked_fill(~kept, float("-inf"))
        record("sampling.kept", keep, note="tokens that survived every filter")

        probs = softmax(logits, dim=-1)
        record("sampling.probs", probs, note="renormalized over the kept tokens")
        return logits, probs

    def _check(
        self,
        logits: torch.Tensor,
        params: Sequence[SamplingParams],
        generators: Sequence[torch.Generator | None] | None,
    ) -> torch.Tensor:
        if logits.dim() != 2:
            raise LLMInternalsError(
                f"sampler expects logits of shape (batch, vocab), got {tuple(logits.shape)}",
                hint="take the last position: logits[:, -1, :]",
            )
        if len(params) != logits.shape[0]:
            raise LLMInternalsError(
                f"sampler got {len(params)} SamplingParams for a batch of {logits.shape[0]} rows"
            )
        if generators is not None and len(generators) != logits.shape[0]:
            raise LLMInternalsError(
                f"sampler got {len(generators)} generators for a batch of {logits.shape[0]} rows"
            )
        if logits.device.type == "mps":  # MPS has no float64, which penalties and tiny T need
            logits = logits.cpu()
        return logits.float()  # half-precision logits lose too much in exp and cumsum

    def _penalize(
        self,
        logits: torch.Tensor,
        params: Sequence[SamplingParams],
        prompt_ids: Sequence[Sequence[int]] | None,
        output_ids: Sequence[Sequence[int]] | None,
    ) -> torch.Tensor:
        if not any(p.uses_penalties for p in params):
            return logits
        batch, vocab = logits.shape
        if output_ids is None or prompt_ids is None:
            raise LLMInternalsError(
                "sampling penalties need prompt_ids and output_ids for every row",
                hint="pass the token ids seen so far, or set the penalties to their defaults",
            )
        if len(prompt_ids) != batch or len(output_ids) != batch:
            raise LLMInternalsError(
                f"sampler got {len(prompt_ids)} prompt_ids and {len(output_ids)} output_ids "
                f"for a batch of {batch} rows"
            )
        logits = logits.double()  # |z| / r stays finite for r >= 1.2e-38 (params.FLOAT32_TINY)
        output_counts = token_counts(output_ids, vocab, logits.device)
        seen = (token_counts(prompt_ids, vocab, logits.device) + output_counts) > 0

        def column(name: str) -> torch.Tensor:
            return torch.tensor([getattr(p, name) for p in params], device=logits.device)

        if any(p.repetition_penalty != 1.0 for p in params):
            logits = apply_repetition_penalty(logits, seen, column("repetition_penalty"))
        if any(p.frequency_penalty != 0.0 or p.presence_penalty != 0.0 for p in params):
            logits = apply_frequency_presence_penalty(
                logits, output_counts, column("frequency_penalty"), column("presence_penalty")
            )
        record("sampling.penalized", logits.float(),
               note="after repetition/frequency/presence penalties")  # fmt: skip
        return logits

    def _uniforms(
        self, rows: list[int], generators: Sequence[torch.Generator | None] | None
    ) -> torch.Tensor:
        """One float64 Uniform[0, 1) per row: from the row's generator, else the shared one."""
        uniforms = torch.empty(len(rows), dtype=torch.float64, device="cpu")
        shared = [i for i, row in enumerate(rows) if generators is None or generators[row] is None]
        if shared:
            uniforms[shared] = _rand(len(shared), self.generator)
        for i, row in enumerate(rows):
            if generators is not None and generators[row] is not None:
                uniforms[i] = _rand(1, generators[row])[0]
        return uniforms


def sample(
    logits: torch.Tensor,
    params: SamplingParams | None = None,
    generator: torch.Generator | None = None,
    prompt_ids: Sequence[int] = (),
    output_ids: Sequence[int] = (),
) -> int:
    """Sample one token from a single distribution (logits of shape (vocab,))."""
    params = params or SamplingParams()
    if logits.dim() != 1:
        raise LLMInternalsError(
            f"sample() expects logits of shape (vocab,), got {tuple(logits.shape)}",
            hint="use Sampler for a batch",
        )
    tokens = Sampler(generator)(
        logits[None], [params], prompt_ids=[list(prompt_ids)], output_ids=[list(output_ids)]
    )
    return int(tokens[0])
