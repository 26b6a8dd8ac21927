"""One PBA trial's work for one generation, as a Ray actor runs it: load the trial's state, train to the next
perturbation point with its policy, evaluate there, hand the state back.

The trial does not know which role it trains: a *trainer factory* (a plain module-level function of the pipeline
layer) builds the :class:`Trainer` and the policy augmenter it drives. A worker is not tied to one trial: the
state it is handed (weights, optimiser, lr schedule, objective, epoch) plus the trial's seed is everything that
trial's next epochs depend on, so a trial's result is the same on whichever worker, node or retry it runs.
"""

from __future__ import annotations

import io
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence

import torch

from ..augment.policy import Policy
from ..training import Trainer


class PolicySetter(Protocol):
    def set_policy(self, policy: Policy) -> None: ...


@dataclass
class TrialParts:
    """What a trainer factory returns: the loop, the augmenter whose policy the search sets, and
    ``prepare``: one-off work before a fresh trial's first epoch (e.g. MHGD's initialisation),
    skipped when the trial starts from a state, which already holds its result."""

    trainer: Trainer
    augmenter: PolicySetter
    eval_batch_size: int = 1000
    prepare: Callable[[], None] | None = None


TrainerFactory = Callable[[dict[str, Any], int], TrialParts]
"""``factory(args, trial_seed) -> TrialParts``; ``trial_seed`` tells the population's members apart."""


def policy_ints(value: Sequence[Any]) -> list[int]:
    """A policy (60 ints or 30 named entries) as PBA's 60 ints, validated."""
    if value and isinstance(value[0], dict):
        return Policy.from_dicts(value).to_pba_list()
    return Policy.from_pba_list(list(value)).to_pba_list()


@dataclass(frozen=True)
class Task:
    """Train trial ``name`` from ``state`` (None: a fresh trial) to epoch ``stop`` with ``policy``."""

    name: str
    seed: int
    policy: list[int]
    state: bytes | None
    stop: int
    evaluate: bool = True


@dataclass
class Outcome:
    name: str
    state: bytes
    rows: list[dict[str, Any]] = field(default_factory=list)  # one per epoch trained; the last has val_* when evaluated
    busy_s: float = 0.0


def global_seed(seed: int, epoch: int) -> int:
    """The process-global torch seed for one epoch of one trial (dropout and any op drawing without a generator)."""
    return (seed * 1_000_003 + epoch * 7_919 + 29) % 2**63


def state_bytes(trainer: Trainer) -> bytes:
    buffer = io.BytesIO()
    torch.save(trainer.state_dict(), buffer)
    return buffer.getvalue()


def load_state_bytes(data: bytes, device: torch.device) -> dict[str, Any]:
    return torch.load(io.BytesIO(data), map_location=device, weights_only=True)


def make_deterministic(device: torch.device) -> None:
    """On CUDA, ask torch for its deterministic kernels (warning, not failing, where an op has none); the CPU's
    kernels are deterministic for a fixed thread count already."""
    if device.type != "cuda":
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    torch.use_deterministic_algorithms(True, warn_only=True)


class TrialWorker:
    """Runs :class:`Task` s; one per slot of the search (a Ray actor), reused across trials and generations."""

    def __init__(self, factory: TrainerFactory, factory_args: dict[str, Any], threads: int) -> None:
        torch.set_num_threads(max(1, threads))
        self.factory, self.args = factory, factory_args
        self.parts: TrialParts | None = None
        self.built_for: int | None = None  # the trial seed ``parts`` were built with

    def run(self, task: Task) -> Outcome:
        try:
            return self._run(task)
        except BaseException:
            self.parts, self.built_for = None, None  # a retry starts from a trainer no failed epoch touched
            raise

    def _run(self, task: Task) -> Outcome:
        t0 = time.perf_counter()
        if task.state is None or self.built_for != task.seed:  # a factory may build each trial differently
            self.parts = None  # free the previous trial's model before building the next
            self.parts = self.factory(self.args, task.seed)  # a fresh trial's weights come from its seed
            self.built_for = task.seed
            make_deterministic(self.parts.trainer.device)
        parts, trainer = self.parts, self.parts.trainer
        if task.state is None:
            if parts.prepare is not None:
                parts.prepare()
        else:
            trainer.load_state_dict(load_state_bytes(task.state, trainer.device))
        parts.augmenter.set_policy(Policy.from_pba_list(task.policy))
        rows = []
        while trainer.epoch < task.stop:
            torch.manual_seed(global_seed(task.seed, trainer.epoch))
            rows.append(trainer.train_epoch())
            rows[-1]["epoch"] = trainer.epoch
        if task.evaluate and rows:
            rows[-1].update({f"val_{k}": v for k, v in trainer.evaluate(batch_size=parts.eval_batch_size).items()})
        return Outcome(task.name, state_bytes(trainer), rows, time.perf_counter() - t0)
