"""The population between generations: who is alive, at which epoch, with which policy, and who clones whom.

Pure bookkeeping, no Ray and no torch: the driver (:mod:`rolekd.pba.run`) trains every live trial to the next
perturbation point, then calls :func:`exploit_and_explore` with the search's own seeded ``random.Random``. Every
trial ranked there has trained the same number of epochs (a generation), so no trial is compared with one ahead
of it, and the same generator state gives the same decisions.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

from .explore import explore


def trial_name(index: int) -> str:
    return f"trial_{index:02d}"


def trial_seed(search_seed: int, index: int) -> int:
    """Each trial's own seed (its initial weights, data order and augmentation draws), from the search's seed:
    another search seed changes every trial, not only the first (``seed + index`` would share all but one)."""
    return random.Random(f"rolekd-trial/{search_seed}/{index}").randrange(2**31)


def generation_ends(epochs: int, interval: int) -> list[int]:
    """The epochs at which the population is ranked, the last one being the end: ``[k, 2k, ..., epochs]``."""
    ends = list(range(interval, epochs, interval))
    return ends + [epochs]


@dataclass
class Trial:
    """One member of the population as the driver keeps it between generations."""

    name: str
    seed: int
    policy: list[int]  # the 60 ints it trains with from now on
    policies: list[list[int]] = field(default_factory=list)  # the policy of each completed epoch
    epoch: int = 0
    val_acc: float | None = None  # at ``epoch``, when evaluated there
    state: str | None = None  # the file holding its trainer state at ``epoch`` (None: not trained yet)
    failures: int = 0

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> "Trial":
        return cls(**obj)


@dataclass(frozen=True)
class Exploit:
    """``target`` continues from ``source``'s state at ``epoch`` with ``new_policy`` (explored ``old_policy``)."""

    target: str
    source: str
    epoch: int
    old_policy: list[int]
    new_policy: list[int]


def quantiles(trials: list[Trial], fraction: float) -> tuple[list[Trial], list[Trial]]:
    """(bottom, top) of the population by validation accuracy, as Ray's PBT cuts them (ceil, at most half).

    Ties are broken by name, so the cut depends on the scores alone, never on the order trials finished in.
    """
    ranked = sorted((t for t in trials if t.val_acc is not None and not math.isnan(t.val_acc)),
                    key=lambda t: (t.val_acc, t.name))
    if len(ranked) <= 1:
        return [], []
    n = int(math.ceil(len(ranked) * fraction))
    if n > len(ranked) / 2:
        n = len(ranked) // 2
    return ranked[:n], ranked[len(ranked) - n:]


def exploit_and_explore(trials: list[Trial], fraction: float, resample_p: float, rng: random.Random) -> list[Exploit]:
    """PBT's step at a perturbation point: each bottom-quantile trial clones a top-quantile one chosen by ``rng``
    and trains on with the source's policy explored by PBA's explore (same ``rng``).

    Every trial must be at the same epoch: the generation's barrier guarantees it, and this refuses otherwise.
    """
    epochs = {t.epoch for t in trials}
    if len(epochs) > 1:
        raise ValueError(f"trials ranked at different epochs {sorted(epochs)}; expected one generation")
    bottom, top = quantiles(trials, fraction)
    decisions = []
    for target in bottom:
        source = rng.choice(top)
        decisions.append(Exploit(target.name, source.name, source.epoch, list(source.policy),
                                 explore(source.policy, rng, resample_p)))
    return decisions


def apply(exploit: Exploit, trials: dict[str, Trial]) -> None:
    """The target takes the source's state, past policies and accuracy, and the explored policy."""
    source, target = trials[exploit.source], trials[exploit.target]
    target.state = source.state
    target.policies = [list(p) for p in source.policies]
    target.epoch = source.epoch
    target.val_acc = source.val_acc
    target.policy = list(exploit.new_policy)
