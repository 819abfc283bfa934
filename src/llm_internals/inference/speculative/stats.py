"""What speculation achieved: proposals, acceptances, target forwards, and the formula to compare.

Two acceptance figures, because they answer different questions:

    acceptance rate   = accepted / proposed       (what vLLM reports: the share of draft tokens
                                                   that made it into the output)
    alpha (estimate)  = accepted / examined       (the per-token acceptance probability of
                                                   Leviathan et al.: each examined draft position
                                                   is one Bernoulli(alpha) trial; positions after
                                                   the first rejection are never examined)

With i.i.d. acceptances at rate alpha and gamma drafts per round, a target forward yields on
average E = (1 - alpha^(gamma+1)) / (1 - alpha) tokens (Leviathan et al. 2023, eq. 1);
`expected_tokens_per_forward` evaluates it at the measured alpha and the mean gamma, beside the
observed `tokens_per_target_forward`. Rounds counted per sequence: one batched target forward
over four sequences is four sequence-rounds.
"""

from __future__ import annotations

from dataclasses import dataclass, field


def expected_tokens_per_forward(alpha: float, gamma: float) -> float:
    """(1 - alpha^(gamma+1)) / (1 - alpha): tokens per target forward with i.i.d. acceptances
    (gamma + 1 when alpha = 1)."""
    if alpha >= 1.0:
        return gamma + 1.0
    return (1.0 - alpha ** (gamma + 1)) / (1.0 - alpha)


@dataclass
class SpeculativeStats:
    """Counters filled in by the speculative loop (all sequences together).

    method: "draft-model" or "ngram"; gamma: the (maximum) drafts per round; adaptive: whether
    gamma followed the acceptance rate (adaptive.py).
    per_position_proposed[i] / per_position_accepted[i]: drafts at position i+1 of a round, and
    how many of them were accepted.
    """

    method: str = ""
    gamma: int = 0
    adaptive: bool = False
    proposed: int = 0
    accepted: int = 0
    examined: int = 0
    rounds: int = 0  # sequence-rounds: one per sequence per target forward
    target_forwards: int = 0  # batched target forwards
    draft_forwards: int = 0  # batched draft-model forwards (0 for n-gram lookup)
    tokens_emitted: int = 0  # tokens the rounds produced (before a stop cut them short)
    per_position_proposed: list[int] = field(default_factory=list)
    per_position_accepted: list[int] = field(default_factory=list)

    def add_round(self, proposed: int, accepted: int, emitted: int) -> None:
        """Book one sequence's round: `proposed` drafts, the first `accepted` kept, `emitted`
        tokens produced (accepted + 1)."""
        self.rounds += 1
        self.proposed += proposed
        self.accepted += accepted
        self.examined += accepted + (1 if accepted < proposed else 0)
        self.tokens_emitted += emitted
        grow = proposed - len(self.per_position_proposed)
        if grow > 0:
            self.per_position_proposed += [0] * grow
            self.per_position_accepted += [0] * grow
        for i in range(proposed):
            self.per_position_proposed[i] += 1
            self.per_position_accepted[i] += int(i < accepted)

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.proposed if self.proposed else 0.0

    @property
    def alpha(self) -> float:
        return self.accepted / self.examined if self.examined else 0.0

    @property
    def tokens_per_target_forward(self) -> float:
        """Tokens per sequence-round (1.0 is plain decoding)."""
        return self.tokens_emitted / self.rounds if self.rounds else 0.0

    @property
    def mean_gamma(self) -> float:
        return self.proposed / self.rounds if self.rounds else 0.0

    @property
    def expected_tokens_per_forward(self) -> float:
        """The formula at the measured alpha and the mean drafts per round."""
        return expected_tokens_per_forward(self.alpha, self.mean_gamma)

    def per_position_acceptance(self) -> list[float]:
        """Accepted share of the drafts at each position of a round."""
        return [a / p if p else 0.0
                for a, p in zip(self.per_position_accepted, self.per_position_proposed,
                                strict=True)]  # fmt: skip

    def summary(self) -> str:
        """One line for the CLI."""
        gamma = f"gamma {self.gamma}"
        if self.adaptive:
            gamma += f" (adaptive, mean {self.mean_gamma:.2f})"
        return (
            f"speculative ({self.method}, {gamma}): acceptance rate {self.acceptance_rate:.1%} "
            f"({self.accepted}/{self.proposed}), alpha {self.alpha:.3f}, "
            f"{self.tokens_per_target_forward:.2f} tokens per target forward "
            f"(formula at this alpha: {self.expected_tokens_per_forward:.2f})"
        )
