"""The verification step of speculative decoding: exact rejection sampling (Leviathan et al. 2023).

Letters follow Leviathan: **p is the target** model's distribution, **q is the draft**'s (Chen et
al. 2023 swap them). A draft proposed x_1..x_g with distributions q_1..q_g; one target forward
scored the same positions, giving p_1..p_{g+1}. For one row:

    for i = 1..g:   accept x_i  iff  r_i * q_i(x_i) < p_i(x_i),  r_i ~ U[0, 1)
                    (probability min(1, p_i(x_i) / q_i(x_i)); a token with p = 0 never passes)
                    stop at the first rejection: n = i - 1
    if n < g:       next ~ norm(max(0, p_{n+1} - q_{n+1}))     (the residual)
    else:           next ~ p_{g+1}                              (the bonus token)
    emit x_1..x_n, next                                         (n + 1 tokens per target forward)

Why the output is exactly p (one position): P(x) = q(x) min(1, p(x)/q(x)) + (1 - beta) p'(x)
= min(p, q)(x) + (p(x) - min(p, q)(x)) = p(x), since 1 - beta = sum max(0, p - q). Position by
position this gives the target's joint distribution (tests/inference/test_speculative_rejection.py
checks it exactly and with chi-square tests).

A deterministic draft (n-gram lookup) has q = one-hot(x); pass `q_draft=None`. Then the rule is
exact as written: accept with probability p(x), and the residual max(0, p - onehot(x)) is p with
x removed (p(x) - 1 <= 0), renormalised. The degenerate residual (sum max(0, p - q) = 0, i.e.
p == q) cannot be reached by a rejection in exact arithmetic (a rejection needs p(x) < q(x),
so some other token has p > q); if float rounding gets there anyway, `next` is drawn from p itself,
the distribution the position must follow.

Greedy mode (temperature 0): accept x_i while x_i == argmax p_i; `next` = argmax p at the first
disagreement (or the bonus position), so the output equals plain greedy decoding token for token.
Greedy mode reads only argmax p_target: pass the filtered logits (no softmax ties) or probs.

Rows of a batch are independent: each has its own number of drafts (`num_drafts`, e.g. the
n-gram proposer may find fewer than g or none), its own uniforms and its own acceptance count.

Recorded (explain path), per row and draft position: "speculative.draft_tokens",
"speculative.p_x" (p_i(x_i)), "speculative.q_x" (q_i(x_i)), "speculative.uniforms" (r_i, and the
draw's uniform in the last column), "speculative.accepted" (the accept decision at each examined
position), "speculative.num_accepted", "speculative.residual" (the distribution `next` was drawn
from: the residual, or p_{g+1} for a bonus), "speculative.next_token".
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from llm_internals.errors import LLMInternalsError
from llm_internals.inference.sampling import inverse_cdf_sample
from llm_internals.trace import is_recording, record


@dataclass
class Verdict:
    """The outcome of verifying a batch of drafts.

    num_accepted: (batch,) int64, n, the accepted prefix length of each row.
    next_token: (batch,) int64, the residual draw at position n + 1 (or the bonus token).
    accepted: (batch, g) bool, True at the accepted positions (a prefix of each row: positions
        after the first rejection, or past the row's num_drafts, are False).
    """

    num_accepted: torch.Tensor
    next_token: torch.Tensor
    accepted: torch.Tensor

    def emitted(self, draft_tokens: torch.Tensor) -> list[list[int]]:
        """Each row's emitted tokens: the accepted drafts, then next_token."""
        rows = []
        for row, n in enumerate(self.num_accepted.tolist()):
            rows.append(draft_tokens[row, :n].tolist() + [int(self.next_token[row])])
        return rows


def verify(
    p_target: torch.Tensor,
    q_draft: torch.Tensor | None,
    draft_tokens: torch.Tensor,
    *,
    num_drafts: torch.Tensor | None = None,
    uniforms: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    greedy: bool = False,
) -> Verdict:
    """Verify a batch of drafts (see the module docstring for the rule).

    p_target: (batch, g + 1, V) target probabilities at each draft position and the bonus one.
    q_draft: (batch, g, V) draft probabilities, or None for deterministic drafts (one-hot q).
    draft_tokens: (batch, g) int64 proposed tokens (entries past a row's num_drafts are ignored).
    num_drafts: (batch,) drafts per row, each in [0, g]; default g for every row.
    uniforms: (batch, g + 1) float64 in [0, 1): r_1..r_g for the acceptances, then the uniform of
        the residual/bonus draw (inverse-CDF). Drawn from `generator` when None. Unused in greedy
        mode.
    One-row inputs (p of shape (g + 1, V), q (g, V), tokens (g,)) are accepted too and give a
    batch of one.
    """
    if draft_tokens.dim() == 1:
        p_target, draft_tokens = p_target[None], draft_tokens[None]
        q_draft = None if q_draft is None else q_draft[None]
        uniforms = None if uniforms is None else uniforms.reshape(1, -1)
    batch, gamma = draft_tokens.shape
    _check_shapes(p_target, q_draft, draft_tokens, uniforms)
    device = p_target.device
    positions = torch.arange(gamma, device=device)
    if num_drafts is None:
        num_drafts = torch.full((batch,), gamma, dtype=torch.long, device=device)
    num_drafts = num_drafts.to(device=device, dtype=torch.long)
    if bool((num_drafts < 0).any()) or bool((num_drafts > gamma).any()):
        raise LLMInternalsError(f"num_drafts must lie in [0, {gamma}], got {num_drafts.tolist()}")
    valid = positions[None, :] < num_drafts[:, None]
    tokens = torch.where(valid, draft_tokens, torch.zeros_like(draft_tokens))

    if greedy:
        accept = (p_target[:, :gamma].argmax(dim=-1) == tokens) & valid
    else:
        if uniforms is None:
            uniforms = torch.rand(batch, gamma + 1, dtype=torch.float64, generator=generator)
        uniforms = uniforms.to(device=device, dtype=torch.float64)
        p_x = p_target[:, :gamma].gather(-1, tokens[..., None]).squeeze(-1).double()
        q_x = (
            torch.ones_like(p_x)
            if q_draft is None
            else q_draft.gather(-1, tokens[..., None]).squeeze(-1).double()
        )
        accept = (uniforms[:, :gamma] * q_x < p_x) & valid  # r < p/q without dividing by q
    num_accepted = accept.long().cumprod(dim=-1).sum(dim=-1)  # the accepted prefix
    accepted = positions[None, :] < num_accepted[:, None]

    rows = torch.arange(batch, device=device)
    p_next = p_target[rows, num_accepted].double()  # (batch, V): p_{n+1}
    if greedy:
        next_token = p_next.argmax(dim=-1)
        draw_from = p_next
    else:
        rejected = num_accepted < num_drafts
        draw_from = torch.where(rejected[:, None], _residual(p_next, q_draft, tokens,
                                                             num_accepted), p_next)  # fmt: skip
        next_token = inverse_cdf_sample(draw_from, uniforms[:, gamma])
    if is_recording():
        record("speculative.draft_tokens", tokens, note="proposed tokens x_1..x_g per row")
        if not greedy:
            record("speculative.p_x", p_x, note="target probability p_i(x_i)")
            record("speculative.q_x", q_x, note="draft probability q_i(x_i) (1: deterministic)")
            record("speculative.uniforms", uniforms, note="r_1..r_g, then the draw's uniform")
        examined = positions[None, :] <= num_accepted[:, None]
        record("speculative.accepted", accept & examined & valid,
               note="accept decisions at the examined positions")  # fmt: skip
        record("speculative.num_accepted", num_accepted)
        record("speculative.residual", draw_from,
               note="norm(max(0, p - q)) at the first rejection, else p_{g+1} (bonus)")  # fmt: skip
        record("speculative.next_token", next_token)
    return Verdict(num_accepted, next_token, accepted)


def _residual(
    p_next: torch.Tensor, q_draft: torch.Tensor | None, tokens: torch.Tensor, n: torch.Tensor
) -> torch.Tensor:
    """max(0, p_{n+1} - q_{n+1}) per row (unnormalised: the inverse-CDF draw divides by its
    total). A one-hot q removes the rejected token from p. Where the total is 0 (p == q, reached
    only through rounding), p itself."""
    gamma = tokens.shape[1]
    if gamma == 0:
        return p_next
    rows = torch.arange(tokens.shape[0], device=tokens.device)
    at = n.clamp(max=gamma - 1)  # rows with n == g take the bonus path; any index will do here
    if q_draft is None:
        residual = p_next.scatter(-1, tokens[rows, at][:, None], 0.0)
    else:
        residual = (p_next - q_draft[rows, at].double()).clamp(min=0.0)
    empty = residual.sum(dim=-1, keepdim=True) <= 0
    return torch.where(empty, p_next, residual)


def _check_shapes(
    p_target: torch.Tensor,
    q_draft: torch.Tensor | None,
    draft_tokens: torch.Tensor,
    uniforms: torch.Tensor | None,
) -> None:
    batch, gamma = draft_tokens.shape
    if p_target.dim() != 3 or p_target.shape[:2] != (batch, gamma + 1):
        raise LLMInternalsError(
            f"p_target must have shape (batch, g + 1, vocab) = ({batch}, {gamma + 1}, V) for "
            f"{gamma} draft tokens, got {tuple(p_target.shape)}"
        )
    if q_draft is not None and tuple(q_draft.shape) != (batch, gamma, p_target.shape[-1]):
        raise LLMInternalsError(
            f"q_draft must have shape {(batch, gamma, p_target.shape[-1])}, got "
            f"{tuple(q_draft.shape)}",
            hint="the draft and the target must share one vocabulary",
        )
    if uniforms is not None and tuple(uniforms.shape) != (batch, gamma + 1):
        raise LLMInternalsError(
            f"uniforms must have shape {(batch, gamma + 1)}, got {tuple(uniforms.shape)}"
        )
