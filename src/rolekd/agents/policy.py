"""The schedule-driven PBA augmenter: picks the current epoch's policy and applies it.

It runs in pixel space before the baseline crop/flip/cutout, the order PBA uses (policy first,
then ``zero_pad_and_crop``, ``random_flip``, ``cutout_numpy``); ``build_augmenters`` lists it first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from ..augment.base import AugmentContext, Batch
from ..augment.policy import Policy, apply_policy
from ..augment.schedule import Schedule

__all__ = ["PolicyAugmenter"]


class PolicyAugmenter:
    """Apply ``schedule.policy_for_epoch(ctx.epoch)`` to every batch (or one fixed policy).

    A schedule whose length differs from the run's ``ctx.num_epochs`` is replayed with
    :meth:`Schedule.stretch` (PBA's ``--hp_policy_epochs`` multiplier), once per length.
    The search drives it through :meth:`set_policy`.
    """

    space: Literal["pixel"] = "pixel"

    def __init__(
        self,
        source: Schedule | Policy | str | Path,
        stretch_mode: Literal["pba", "proportional"] = "pba",
    ) -> None:
        self.stretch_mode = stretch_mode
        self._source: Schedule | Policy = Schedule.load(source) if isinstance(source, (str, Path)) else source
        if not isinstance(self._source, (Schedule, Policy)):
            raise TypeError(
                f"PolicyAugmenter needs a Schedule, a Policy or a schedule path, got {type(source).__name__}"
            )
        self._stretched: dict[int, Schedule] = {}

    def set_policy(self, policy: Policy) -> None:
        """Use ``policy`` for every epoch from now on (PBT sets a trial's current policy)."""
        self._source = policy
        self._stretched.clear()

    def set_schedule(self, schedule: Schedule) -> None:
        self._source = schedule
        self._stretched.clear()

    @property
    def source(self) -> Schedule | Policy:
        return self._source

    def policy_for(self, epoch: int, num_epochs: int) -> Policy:
        """The policy for ``epoch`` of a ``num_epochs``-epoch run."""
        src = self._source
        if isinstance(src, Policy):
            return src
        if len(src) != num_epochs and num_epochs > 0:
            if num_epochs not in self._stretched:
                self._stretched[num_epochs] = src.stretch(num_epochs, self.stretch_mode)
            src = self._stretched[num_epochs]
        return src.policy_for_epoch(min(max(epoch, 0), len(src) - 1))

    def __call__(self, batch: Batch, ctx: AugmentContext) -> Batch:
        policy = self.policy_for(ctx.epoch, ctx.num_epochs)
        if policy.prob_sum == 0 or len(batch) == 0:
            return batch  # PBA's all-zero policy: nothing fires (no random numbers drawn either)
        return batch.with_images(apply_policy(batch.images, policy, ctx.generator, ctx.fill))

    def __repr__(self) -> str:
        src = self._source
        what = f"schedule of {len(src)} epochs" if isinstance(src, Schedule) else str(src)
        return f"PolicyAugmenter({what})"
