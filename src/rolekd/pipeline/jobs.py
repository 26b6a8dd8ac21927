"""A run's trainings as jobs: what one training of a row and seed needs, and how one is trained into its folder.

Shared by both ways ``rolekd run`` trains (:mod:`.in_process` and :mod:`.ray_trainings`), so a training computes
the same numbers whichever runs it.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch

from ..augment.schedule import Schedule
from ..config import TrainingConfig
from ..atomic import atomic_write_json
from ..training import load_checkpoint
from .setup import Prepared
from .stages import Role, TeacherHandle, train_network

RECORD = "trainings.jsonl"  # one line per training run on Ray: where it ran and for how long
FINISHED = "finished.json"  # written once a job's last epoch is saved: it stays finished when its checkpoints go


def job_label(key: str, seed: int) -> str:
    """A training's name in messages and in ``Job.after``: its row and seed."""
    return f"{key} (seed {seed})"


@dataclass(frozen=True)
class Job:
    """One training of a run: a row for one seed, with everything it needs besides the config and the data."""

    key: str
    role: Role
    seed: int
    folder: Path
    epochs: int  # how long it trains: handed down to its Trainer, and the epoch complete expects last.pt at
    schedule: Schedule | None = None
    teacher: str | None = None  # the teacher checkpoint (KD or a warm start)
    distill: bool = False
    agents: tuple[str, ...] = ()
    title: str = ""  # the row's words in the report
    after: str | None = None  # the label of the training this one waits for (its teacher's, in this run)
    cutout: int | None = None  # the cutout after its schedule; None: the config's (data.schedule_cutout)

    @property
    def label(self) -> str:
        return job_label(self.key, self.seed)

    @property
    def complete(self) -> bool:
        """Finished in its folder: its ``finished.json`` says so (kept when the checkpoints are pruned to save disk,
        e.g. a study carried between machines), or its ``last.pt`` is at the last epoch."""
        try:
            if json.loads((self.folder / FINISHED).read_text()).get("epochs") == self.epochs:
                return True
        except (OSError, ValueError, AttributeError):
            pass
        last = self.folder / "last.pt"
        return last.is_file() and load_checkpoint(last).get("epoch") == self.epochs


@contextmanager
def torch_threads(cpus: float | None) -> Iterator[None]:
    """Train with as many intra-op threads as the training's CPUs (``None``: leave torch's own setting), so a
    training computes the same numbers in this process and in a Ray worker given the same CPUs."""
    if cpus is None:
        yield
        return
    saved = torch.get_num_threads()
    torch.set_num_threads(max(1, int(cpus)))
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def train_job(cfg: TrainingConfig, prep: Prepared, job: Job, teacher: TeacherHandle | None,
              callback: Any = None) -> dict[str, Any]:
    """Train one job into its folder (resuming what it finds there), here or in a worker; its last epoch's
    metrics. ``teacher`` is the loaded ``job.teacher`` (the pipeline keeps one per seed)."""
    fit = train_network(cfg, prep, job.role, job.folder, schedule=job.schedule, teacher=teacher, distill=job.distill,
                        agents=job.agents, epochs=job.epochs, cutout=job.cutout, resume=True, callback=callback,
                        seed=job.seed)
    atomic_write_json(job.folder / FINISHED, {"epochs": job.epochs, "last": fit.last})
    return fit.last
