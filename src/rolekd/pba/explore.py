"""PBA's explore step (the paper's Algorithm 2) on the 60-int policy encoding.

Even indices are probabilities (0..10), odd ones magnitudes (0..9). Each integer independently is
resampled uniformly with probability ``resample_p``, else moved by ``±{0,1,2,3}`` and clamped.
"""

from __future__ import annotations

import random
from typing import Sequence

from ..augment.ops import MAX_LEVEL
from ..augment.policy import MAX_PROB

MAX_SHIFT = 3  # PBA: amt ~ U{0, 1, 2, 3}


def value_max(index: int) -> int:
    """Upper bound of the integer at ``index`` of the 60-int list."""
    return MAX_PROB if index % 2 == 0 else MAX_LEVEL


def explore(values: Sequence[int], rng: random.Random, resample_p: float = 0.2) -> list[int]:
    """Perturb a 60-int policy as PBA's ``explore`` does; returns a new list."""
    out = []
    for i, v in enumerate(values):
        hi = value_max(i)
        if rng.random() < resample_p:
            out.append(rng.randint(0, hi))
            continue
        amt = rng.randint(0, MAX_SHIFT)
        out.append(max(0, v - amt) if rng.random() < 0.5 else min(hi, v + amt))
    return out
