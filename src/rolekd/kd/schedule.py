"""The lambda schedule: teacher annealing (Clark et al. 2019) as the paper applies it (§5.1).

The paper halves lambda every 60 of 200 epochs; here the period is a fraction of the run
(``every=0.3``) so that a 10-epoch run anneals at the same points of its schedule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .base import require


@dataclass(frozen=True)
class LambdaSchedule:
    """``lam * decay ** k`` in the k-th period of ``every * num_epochs`` epochs (per epoch, not per step)."""

    lam: float
    decay: float  # defaults: config.DistillConfig's lam_decay / lam_every (the one place for them)
    every: float

    def __post_init__(self) -> None:
        require(self.lam >= 0, f"distill lam must be >= 0, got {self.lam}")
        require(0 < self.decay <= 1, f"distill lam_decay must be in (0, 1], got {self.decay}")
        require(self.every > 0, f"distill lam_every must be a positive fraction of the epochs, got {self.every}")

    def value(self, epoch: int, num_epochs: int) -> float:
        period = self.every * max(1, num_epochs)
        # the epsilon keeps 60 / (0.3 * 200) = 0.99999... from missing its milestone
        return self.lam * self.decay ** math.floor(epoch / period + 1e-9)
