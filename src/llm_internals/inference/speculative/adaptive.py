"""How many tokens to draft per round: a fixed gamma, or one that follows the acceptance rate.

The adaptive rule, per sequence. Keep a running estimate of the per-token acceptance probability,
alpha_hat (an exponential moving average, weight `smoothing`, of accepted / examined in each
round; see stats.py for why examined and not proposed). Draft position k pays off only when all
k drafts before and including it are accepted, which happens with probability alpha^k, while
its cost (a draft step and one more verified position) is paid every round. So draft while that
chance is at least `min_reach`:

    gamma = clamp(floor(log(min_reach) / log(alpha_hat)), 1, gamma_max)

e.g. min_reach 0.25: alpha_hat 0.9 -> 13 (clamped to gamma_max), 0.8 -> 6, 0.6 -> 2, 0.4 -> 1.
It starts at gamma_max (alpha_hat = 1) and never goes below 1 (one draft keeps measuring alpha).
"""

from __future__ import annotations

import math

from llm_internals.errors import LLMInternalsError


class GammaSchedule:
    """gamma per round for one sequence: fixed, or adaptive (the rule above)."""

    def __init__(
        self,
        gamma_max: int,
        adaptive: bool = False,
        min_reach: float = 0.25,
        smoothing: float = 0.3,
    ) -> None:
        if isinstance(gamma_max, bool) or not isinstance(gamma_max, int) or gamma_max < 1:
            raise LLMInternalsError(
                f"the number of speculative tokens must be an integer >= 1, got {gamma_max!r}",
                hint="--num-speculative-tokens takes a positive integer (4 is usual)",
            )
        self.gamma_max = gamma_max
        self.adaptive = adaptive
        self.min_reach = min_reach
        self.smoothing = smoothing
        self.alpha_hat = 1.0

    @property
    def gamma(self) -> int:
        if not self.adaptive or self.alpha_hat >= 1.0:
            return self.gamma_max
        if self.alpha_hat <= 0.0:
            return 1
        reach = math.floor(math.log(self.min_reach) / math.log(self.alpha_hat))
        return max(1, min(self.gamma_max, reach))

    def update(self, proposed: int, accepted: int) -> None:
        """Take one round's outcome (no drafts: nothing learned)."""
        if proposed == 0:
            return
        examined = accepted + (1 if accepted < proposed else 0)
        rate = accepted / examined
        self.alpha_hat += self.smoothing * (rate - self.alpha_hat)
