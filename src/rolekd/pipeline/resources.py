"""What one training of a role takes, and how many of them fit at once (counted by ``raycluster.slots``)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from .. import raycluster
from ..config import TrainConfig, TrainingConfig

ROLES = ("teacher", "student")


@dataclass(frozen=True)
class Resources:
    """CPUs and GPUs: one training's, a machine's or cluster's, or the share a search keeps."""

    cpus: float
    gpus: float

    def line(self) -> str:
        return f"{self.cpus:g} CPU" + (f", {self.gpus:g} GPU" if self.gpus else "") + " each"


NOTHING = Resources(0.0, 0.0)


def training_resources(train: TrainConfig, cpus: int, gpus: int) -> Resources:
    """What one training of a role takes where ``cpus`` CPUs and ``gpus`` GPUs are available per machine."""
    g = train.gpus if train.gpus is not None else (1.0 if gpus else 0.0)
    if train.cpus is not None:
        c = train.cpus
    elif g:
        c = float(max(1, cpus // max(1, math.ceil(gpus / g))))  # an equal share of the CPUs per training
    else:
        c = float(cpus)
    return Resources(c, g)


def at_once(res: Resources, cpus: float, gpus: float, cap: int | None) -> int:
    """Trainings of ``res`` at once in ``cpus``/``gpus``: at least one (a training larger than the machine runs
    alone), at most ``cap`` (``pipeline.max_parallel``)."""
    return max(1, raycluster.slots(cpus, gpus, res.cpus, res.gpus, cap))


def local_gpus(device: str) -> int:
    """This machine's GPUs for trainings: none when the config says ``device: cpu`` (they then take no GPU)."""
    return 0 if device == "cpu" else raycluster.local_gpus()


def role_resources(cfg: TrainingConfig, node_cpus: int, node_gpus: int) -> dict[str, Resources]:
    """What one training of each role takes, on machines of ``node_cpus`` CPUs and ``node_gpus`` GPUs."""
    return {role: training_resources(cfg.network(role).train, node_cpus, node_gpus) for role in ROLES}


def role_slots(resources: dict[str, Resources], capacity: Resources, cap: int | None) -> dict[str, int]:
    """How many trainings of each role fit at once in ``capacity``."""
    return {role: at_once(res, capacity.cpus, capacity.gpus, cap) for role, res in resources.items()}
