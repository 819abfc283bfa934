"""The verification step alone: its output distribution is exactly the target's p.

Reference: Leviathan et al. 2023, Alg. 1 (p = target, q = draft). For one position,
P(emit y) = q(y) min(1, p(y)/q(y)) + sum_x q(x) (1 - min(1, p(x)/q(x))) norm(max(0, p - q))(y)
= p(y). Three kinds of check:
- exact: verify is a black box (x, r, u) -> token; its acceptance threshold in r and the
  breakpoints of its residual draw in u are found by bisection (to ~1e-16), so the exact output
  distribution follows by summing the branches, and must equal p to 1e-12;
- empirical: 200k draws, chi-square at alpha = 1e-3 with fixed seeds (deterministic), which a
  deliberately wrong rule (accept with min(1, q/p); residual p instead of max(0, p - q); the
  bonus paired with the wrong position) fails;
- the joint of the first two emitted tokens for g = 2 on bigram tables (spans two rounds when the
  first draft is rejected) against the exact product P(t1 | s) P(t2 | t1).
"""

from __future__ import annotations

import pytest
import torch

from llm_internals.errors import LLMInternalsError
from llm_internals.inference.speculative.rejection import verify
from llm_internals.trace import recording

from .test_sampling_draws import chi2_critical_value, chi2_statistic

ALPHA = 1e-3
VOCAB = 8
N_DRAWS = 200_000


def dirichlet(generator: torch.Generator, rows: int, vocab: int = VOCAB) -> torch.Tensor:
    """Random distributions (Dirichlet(1): normalised exponentials), float64."""
    e = -torch.rand(rows, vocab, dtype=torch.float64, generator=generator).log()
    return e / e.sum(dim=-1, keepdim=True)


def bisect(decide, lo: torch.Tensor, hi: torch.Tensor, steps: int = 64) -> torch.Tensor:
    """Per row, the point in [lo, hi] where decide(x) (True below, False above) flips."""
    for _ in range(steps):
        mid = (lo + hi) / 2
        below = decide(mid)
        lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
    return (lo + hi) / 2


def exact_distribution(p: torch.Tensor, q: torch.Tensor | None, draft: int | None = None):
    """The output distribution of verify for one draft position (g = 1), from its branches.

    q None: a deterministic draft `draft` (one-hot q). Each branch probability is measured on
    verify itself: the acceptance probability is the length of {r in [0, 1): accepted}, the
    residual's mass on token k is the length of {u: token == k} (verify's draw is monotone in u).
    """
    drafts, weights = ([draft], [1.0]) if q is None else (list(range(VOCAB)), q.tolist())
    n = len(drafts)
    p_rows = p.expand(n, 2, VOCAB)  # the bonus row (p_2) is not reached on a rejection
    q_rows = None if q is None else q.expand(n, 1, VOCAB)
    tokens = torch.tensor(drafts)[:, None]

    def accepted(r: torch.Tensor) -> torch.Tensor:
        u = torch.stack([r, torch.zeros_like(r)], dim=1)
        return verify(p_rows, q_rows, tokens, uniforms=u).num_accepted == 1

    accept = bisect(
        accepted, torch.zeros(n, dtype=torch.float64), torch.ones(n, dtype=torch.float64)
    )
    # The residual after a rejection (r just below 1 rejects whenever p(x) < q(x)).
    reject_r = torch.full((n,), 1 - 2**-53, dtype=torch.float64)
    residual = torch.zeros(n, VOCAB, dtype=torch.float64)
    previous = torch.zeros(n, dtype=torch.float64)
    for k in range(VOCAB):

        def at_most_k(u: torch.Tensor, k: int = k) -> torch.Tensor:
            verdict = verify(p_rows, q_rows, tokens, uniforms=torch.stack([reject_r, u], dim=1))
            return verdict.next_token <= k

        boundary = (
            torch.ones(n, dtype=torch.float64)
            if k == VOCAB - 1
            else bisect(
                at_most_k, torch.zeros(n, dtype=torch.float64), torch.ones(n, dtype=torch.float64)
            )  # fmt: skip
        )
        residual[:, k] = boundary - previous
        previous = boundary
    output = torch.zeros(VOCAB, dtype=torch.float64)
    for i, (x, w) in enumerate(zip(drafts, weights, strict=True)):
        a = float(accept[i])
        output[x] += w * a
        if a < 1.0:
            output += w * (1 - a) * residual[i]
    return output


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_exact_output_distribution_equals_p(seed):
    g = torch.Generator().manual_seed(seed)
    p, q = dirichlet(g, 1)[0], dirichlet(g, 1)[0]
    p[3], q[5] = 0.0, 0.0  # a token the target forbids, one the draft never proposes
    p, q = p / p.sum(), q / q.sum()
    output = exact_distribution(p, q)
    assert torch.allclose(output, p, rtol=0, atol=1e-12), (output - p).abs().max()


@pytest.mark.parametrize("draft", [0, 3, 6])
def test_exact_output_distribution_one_hot_draft(draft):
    g = torch.Generator().manual_seed(10 + draft)
    p = dirichlet(g, 1)[0]
    output = exact_distribution(p, None, draft)
    assert torch.allclose(output, p, rtol=0, atol=1e-12), (output - p).abs().max()


def wrong_accept_rule(p, q, x, r, u):
    """Accepts with min(1, q/p) (the letters swapped): must be caught."""
    accept = r * p.gather(-1, x[:, None]).squeeze(-1) < q.gather(-1, x[:, None]).squeeze(-1)
    residual = (p - q).clamp(min=0)
    return torch.where(accept, x, _inverse_cdf(residual, u))


def wrong_residual_rule(p, q, x, r, u):
    """Residual p instead of max(0, p - q): must be caught."""
    accept = r * q.gather(-1, x[:, None]).squeeze(-1) < p.gather(-1, x[:, None]).squeeze(-1)
    return torch.where(accept, x, _inverse_cdf(p, u))


def _inverse_cdf(probs, u):
    cdf = probs.cumsum(dim=-1)
    return (
        torch.searchsorted(cdf, (u * cdf[:, -1])[:, None], right=True)
        .squeeze(-1)
        .clamp(max=probs.shape[-1] - 1)
    )


def one_position_draws(seed: int):
    g = torch.Generator().manual_seed(seed)
    p, q = dirichlet(g, 1)[0], dirichlet(g, 1)[0]
    x = torch.multinomial(q, N_DRAWS, replacement=True, generator=g)
    uniforms = torch.rand(N_DRAWS, 2, dtype=torch.float64, generator=g)
    return p, q, x, uniforms


def test_chi_square_accepts_verify_and_rejects_wrong_rules():
    critical = chi2_critical_value(VOCAB - 1, ALPHA)
    p, q, x, uniforms = one_position_draws(seed=7)
    p_rows = torch.stack([p, p]).expand(N_DRAWS, 2, VOCAB)
    verdict = verify(p_rows, q.expand(N_DRAWS, 1, VOCAB), x[:, None], uniforms=uniforms)
    first = torch.where(verdict.num_accepted == 1, x, verdict.next_token)
    assert chi2_statistic(torch.bincount(first, minlength=VOCAB), p) < critical
    # The acceptance rate is sum min(p, q) within 4.5 binomial standard deviations.
    beta = float(torch.minimum(p, q).sum())
    rate = float(verdict.num_accepted.double().mean())
    assert abs(rate - beta) < 4.5 * (beta * (1 - beta) / N_DRAWS) ** 0.5
    # The same test has the power to see a wrong rule.
    P, Q = p.expand(N_DRAWS, VOCAB), q.expand(N_DRAWS, VOCAB)
    for wrong in (wrong_accept_rule, wrong_residual_rule):
        tokens = wrong(P, Q, x, uniforms[:, 0], uniforms[:, 1])
        assert chi2_statistic(torch.bincount(tokens, minlength=VOCAB), p) > critical, wrong


def bigram_joint(P, Q, start, draws, g, gamma, bug=None):
    """First two emitted tokens of speculative decoding on bigram tables P (target) and Q
    (draft), `gamma` drafts per round; a second round from the first emitted token where the
    first round emits only one. bug="bonus": the bonus is drawn from the last draft's p instead
    of p_{g+1}; bug="shift": p_i is paired with the position after x_i (scored with x_i seen)."""

    def one_round(prev: torch.Tensor) -> torch.Tensor:
        contexts, drafts = [prev], []
        for _ in range(gamma):
            drafts.append(torch.multinomial(Q[contexts[-1]], 1, generator=g).squeeze(-1))
            contexts.append(drafts[-1])
        p_rows = [P[c] for c in contexts]
        if bug == "bonus":
            p_rows[-1] = p_rows[-2]
        elif bug == "shift":
            p_rows = p_rows[1:] + p_rows[-1:]
        tokens = torch.stack(drafts, dim=1)
        verdict = verify(torch.stack(p_rows, dim=1), torch.stack([Q[c] for c in contexts[:-1]], 1),
                         tokens, uniforms=torch.rand(len(prev), gamma + 1, dtype=torch.float64,
                                                     generator=g))  # fmt: skip
        emitted = torch.cat([tokens, torch.full_like(tokens[:, :1], -1)], dim=1)
        n = verdict.num_accepted
        emitted[torch.arange(len(prev)), n] = verdict.next_token
        return emitted.masked_fill(torch.arange(gamma + 1)[None] > n[:, None], -1)

    emitted = one_round(torch.full((draws,), start))
    first, second = emitted[:, 0], emitted[:, 1]
    needs_more = second < 0
    second[needs_more] = one_round(first[needs_more])[:, 0]
    return first * P.shape[0] + second


@pytest.mark.parametrize(("gamma", "bug"), [(1, "bonus"), (2, "shift")])
def test_two_step_joint_distribution(gamma, bug):
    vocab = 6
    g = torch.Generator().manual_seed(3)
    # Mixed with the uniform so every (t1, t2) cell expects >= 5 draws (here >= 1300).
    P = (dirichlet(g, vocab, vocab) + 1 / vocab) / 2
    Q = (dirichlet(g, vocab, vocab) + 1 / vocab) / 2
    exact = (P[2][:, None] * P).flatten()  # P(t1 | 2) P(t2 | t1)
    critical = chi2_critical_value(vocab * vocab - 1, ALPHA)

    def statistic(cells):
        return chi2_statistic(torch.bincount(cells, minlength=vocab * vocab), exact)

    assert statistic(bigram_joint(P, Q, 2, N_DRAWS, g, gamma)) < critical
    assert statistic(bigram_joint(P, Q, 2, N_DRAWS, g, gamma, bug=bug)) > critical


def test_edge_cases_equal_and_disjoint_distributions():
    g = torch.Generator().manual_seed(4)
    p = dirichlet(g, 3)  # (g + 1 = 3, V)
    tokens = torch.tensor([1, 4])
    # p == q: every draft accepted (r < 1 = p/q), the bonus drawn from p_3.
    verdict = verify(p, p[:2], tokens, uniforms=torch.tensor([0.999, 0.999, 0.5]))
    assert verdict.num_accepted.tolist() == [2]
    # Disjoint supports: the draft puts all mass on token 1, the target none: rejected, and the
    # residual is p itself.
    target = p.clone()
    target[0, 1] = 0.0
    target[0] /= target[0].sum()
    q = torch.zeros(2, VOCAB, dtype=torch.float64)
    q[:, 1] = 1.0
    for u in (0.0, 0.3, 0.99):
        verdict = verify(target, q, tokens, uniforms=torch.tensor([0.0, 0.0, u]))
        assert verdict.num_accepted.tolist() == [0]
        cdf = target[0].cumsum(0)
        assert int(verdict.next_token) == int(torch.searchsorted(cdf, u * cdf[-1], right=True))


def test_greedy_mode_accepts_while_argmax_agrees():
    p = torch.zeros(2, 4, 5)
    p[:, 0, 2] = p[:, 1, 3] = p[:, 2, 1] = p[:, 3, 4] = 1.0
    drafts = torch.tensor([[2, 3, 0], [2, 3, 1]])
    verdict = verify(p, None, drafts, greedy=True)
    assert verdict.num_accepted.tolist() == [2, 3]
    assert verdict.next_token.tolist() == [1, 4]  # argmax at the first disagreement / the bonus
    assert verdict.emitted(drafts) == [[2, 3, 1], [2, 3, 1, 4]]
    # Per-row draft counts: row 1 has only one draft, so the bonus comes from position 2.
    verdict = verify(p, None, drafts, greedy=True, num_drafts=torch.tensor([0, 1]))
    assert verdict.num_accepted.tolist() == [0, 1]
    assert verdict.next_token.tolist() == [2, 3]


def test_records_the_round_for_the_lesson():
    g = torch.Generator().manual_seed(5)
    p, q = dirichlet(g, 3), dirichlet(g, 2)
    with recording() as rec:
        verdict = verify(p, q, torch.tensor([1, 2]), uniforms=torch.tensor([0.0, 1 - 1e-9, 0.5]))
    assert torch.equal(rec.get("speculative.p_x"), p[[0, 1], [1, 2]][None])
    assert torch.equal(rec.get("speculative.q_x"), q[[0, 1], [1, 2]][None])
    n = int(verdict.num_accepted)
    residual = rec.get("speculative.residual")[0]
    if n < 2:  # the residual drawn from is max(0, p - q) at the first rejection
        expected = (p[n] - q[n]).clamp(min=0)
        assert torch.equal(residual, expected)


def test_bad_shapes_raise():
    p = torch.full((1, 3, 4), 0.25)
    with pytest.raises(LLMInternalsError, match="q_draft must have shape"):
        verify(p, torch.full((1, 2, 5), 0.2), torch.tensor([[0, 1]]))
    with pytest.raises(LLMInternalsError, match="p_target must have shape"):
        verify(p, None, torch.tensor([[0, 1, 2]]))
    with pytest.raises(LLMInternalsError, match="num_drafts"):
        verify(p, None, torch.tensor([[0, 1]]), num_drafts=torch.tensor([3]))
