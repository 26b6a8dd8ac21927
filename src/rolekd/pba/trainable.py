"""One PBA trial as a Ray Tune ``Trainable``: one Ray iteration is one epoch of the project's loop.

The trial does not know which role it trains: a *trainer factory* (a plain module-level function of
the pipeline layer, handed in through ``tune.with_parameters``) builds the :class:`Trainer` and the
policy augmenter it drives. The hyper-parameter is ``config["policy"]`` (PBA's 60 ints, or the
named entry list); the checkpoint holds what an exploit copies: Trainer state (model, optimiser,
lr schedule, epoch) and the per-epoch policies that produced it.
"""

from __future__ import annotations

import json
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

from ray import tune

from ..augment.policy import Policy
from ..training import Trainer, load_checkpoint, save_checkpoint
from .explore import EXPLORED_AT

CHECKPOINT_FILE = "trial.pt"


class PolicySetter(Protocol):
    def set_policy(self, policy: Policy) -> None: ...


@dataclass
class TrialParts:
    """What a trainer factory returns: the loop, the augmenter whose policy the search sets, and
    ``prepare``: one-off work before a fresh trial's first epoch (e.g. MHGD's initialisation),
    skipped when the trial starts from a checkpoint, which already holds its result."""

    trainer: Trainer
    augmenter: PolicySetter
    eval_batch_size: int = 1000
    prepare: Callable[[], None] | None = None


TrainerFactory = Callable[[dict[str, Any], int], TrialParts]
"""``factory(args, trial_seed) -> TrialParts``; ``trial_seed`` tells the population's members apart."""


def policy_ints(value: Sequence[Any]) -> list[int]:
    """A config policy (60 ints or 30 named entries) as PBA's 60 ints, validated."""
    if value and isinstance(value[0], dict):
        return Policy.from_dicts(value).to_pba_list()
    return Policy.from_pba_list(list(value)).to_pba_list()


def trial_seed(trial_id: str) -> int:
    """The trial's index (Ray ids end in ``_00003``), so seeds repeat from one search to the next."""
    tail = trial_id.rsplit("_", 1)[-1]
    return int(tail) if tail.isdigit() else zlib.crc32(trial_id.encode())


@dataclass
class Clone:
    """An exploit seen from the target's side, reported with the next result."""

    source: str
    source_epoch: int
    old_policy: list[int]
    new_policy: list[int]
    time: float  # when the scheduler decided the exploit (the explorer's stamp)

    def to_json(self) -> str:
        return json.dumps(self.__dict__, separators=(",", ":"))


class PolicyTrial(tune.Trainable):
    """Trains with ``config["policy"]``; reports ``val_acc`` (PBT's metric) and the train terms."""

    def setup(self, config: dict[str, Any], factory: TrainerFactory, factory_args: dict[str, Any]) -> None:
        self._factory, self._factory_args = factory, factory_args
        self._start(config)

    def reset_config(self, new_config: dict[str, Any]) -> bool:
        """A reused actor starts over as another trial; a checkpoint restore, if any, follows."""
        self._start(new_config)
        return True

    def _start(self, config: dict[str, Any]) -> None:
        if hasattr(self, "parts"):
            del self.parts  # free the previous trial's model before building the next
        self.parts = self._factory(self._factory_args, trial_seed(self.trial_id))
        self.policy = policy_ints(config["policy"])
        self.parts.augmenter.set_policy(Policy.from_pba_list(self.policy))
        self.policies: list[list[int]] = []  # the policy of each completed epoch
        self.decided_at = float(config.get(EXPLORED_AT) or time.time())
        self.clone: Clone | None = None
        self.fresh = True  # no checkpoint loaded: ``prepare`` is still due

    @property
    def trainer(self) -> Trainer:
        return self.parts.trainer

    def step(self) -> dict[str, Any]:
        if self.fresh and self.parts.prepare is not None:
            self.parts.prepare()
        self.fresh = False
        train = self.trainer.train_epoch()
        self.policies.append(self.policy)
        val = self.trainer.evaluate(batch_size=self.parts.eval_batch_size)
        clone, self.clone = self.clone, None
        return {
            **train,
            **{f"val_{k}": v for k, v in val.items()},
            "epoch": self.trainer.epoch,
            "exploit": clone.to_json() if clone else "",
        }

    def save_checkpoint(self, checkpoint_dir: str) -> None:
        state = {**self.trainer.state_dict(), "trial_id": self.trial_id, "policy": self.policy, "policies": self.policies}
        save_checkpoint(Path(checkpoint_dir) / CHECKPOINT_FILE, state)

    def load_checkpoint(self, checkpoint_dir: str) -> None:
        state = load_checkpoint(Path(checkpoint_dir) / CHECKPOINT_FILE, map_location=self.trainer.device)
        self.trainer.load_state_dict(state)
        self.fresh = False
        self.policies = [list(p) for p in state["policies"][: self.trainer.epoch]]
        if state["trial_id"] != self.trial_id:
            self.clone = Clone(state["trial_id"], self.trainer.epoch, list(state["policy"]), self.policy, self.decided_at)
