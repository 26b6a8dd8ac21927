"""`rolekd run`'s independent trainings at once: rows x seeds as Ray tasks on every local slot, or on a cluster.

One training takes its role's ``train.cpus`` / ``train.gpus`` (default: one GPU each with CUDA, else all the CPUs,
so one at a time); as many run at once as fit, at most ``pipeline.max_parallel``. A training starts as soon as
what it needs exists: its schedule (it is queued once the search that makes it has finished) and, for a student
on the run's teacher, that teacher (it waits for that training). So the baselines train while stage β searches.
When one fits at a time and no cluster is named, they train in this process one after another, exactly as a
sequential run does. A Ray task trains into the run folder's seed folder with ``resume=True``: a worker that dies
is retried by Ray (``max_retries``) and continues from its last checkpoint, and a finished training is recognised
from its files and skipped, wherever it ran. The run folder must therefore be reachable at the same path from
every node; the data goes through Ray's object store.

The parts, each alone: what a job is and how one trains (:mod:`.jobs`), what a training takes (:mod:`.resources`),
which job may start now (:mod:`.job_queue`), one after another here (:mod:`.in_process`), as Ray tasks
(:mod:`.ray_trainings`). This module ties them together behind the pipeline's ``Trainings``.
"""

from __future__ import annotations

import os
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

from ..config import TrainingConfig
from .eta import after_line
from .in_process import train_in_order
from .job_queue import JobQueue
from .jobs import RECORD, Job, job_label, torch_threads, train_job
from .resources import Resources, local_gpus, role_resources, role_slots, training_resources
from .setup import Prepared

if TYPE_CHECKING:
    from .ray_trainings import RayTrainings

__all__ = ["RECORD", "Job", "Resources", "Trainings", "job_label", "torch_threads", "train_job", "training_resources"]


class Trainings:
    """A run's trainings, each started as soon as what it needs exists (its teacher, for a student).

    ``add`` queues jobs as their schedules become known; ``wait`` blocks until the named ones (default: all) have
    finished. When one training fits at a time and no cluster is named, ``wait`` trains the queue in this process,
    in order. Otherwise the jobs run as Ray tasks, submitted by a thread of this process as they become ready and
    resources free, so the driver can search meanwhile (stage β's search while the other trainings go on).
    A failed training stops the others; their last checkpoints stay for ``--resume``.
    """

    def __init__(self, cfg: TrainingConfig, prep: Prepared, out: Path, *, address: str | None, cap: int | None,
                 train_here: Callable[[Job, float | None], None], record_time: Callable[[str, float], None],
                 say: Callable[[str], None], eta: Callable[[dict[str, int]], str] | None = None) -> None:
        self.cfg, self.prep, self.out, self.address = cfg, prep, out, address
        self.train_here, self.record_time, self.say = train_here, record_time, say
        self.eta = eta or (lambda slots: "")
        capacity = Resources(float(os.cpu_count() or 1), float(local_gpus(cfg.device)))  # Ray's own once it runs
        resources = role_resources(cfg, int(capacity.cpus), int(capacity.gpus))
        self.slots = role_slots(resources, capacity, cap)  # updated in place once on Ray: the run's ETA reads it
        self.on_ray = address is not None or max(self.slots.values()) > 1
        self.jobs = JobQueue(resources, capacity, cap)
        self._cv = threading.Condition()  # guards jobs once a thread submits them to Ray
        self._ray: RayTrainings | None = None

    def __enter__(self) -> "Trainings":
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._ray is not None:
            self._ray.close()

    def add(self, jobs: Sequence[Job]) -> None:
        """Queue ``jobs``; a finished one (found complete in its folder) is skipped."""
        with self._cv:
            self._raise()
            self.jobs.check(jobs)
            for job in jobs:
                if job.complete:
                    self.say(f"   done already: {job.label} ({job.folder})")
                    self.jobs.finish(job)
                else:
                    self.jobs.add(job)
            self._cv.notify_all()
        if self.on_ray and self.jobs.queued and self._ray is None:
            self._start_ray()

    def wait(self, labels: Sequence[str] | None = None) -> None:
        """Until the trainings ``labels`` (default: every one added) have finished."""
        want = None if labels is None else set(labels)
        with self._cv:
            known = self.jobs.known()
        if want and not want <= known:
            raise ValueError(f"cannot wait for {sorted(want - known)}: not trainings of this run")
        if not self.on_ray:
            train_in_order(self.jobs, want, self._train_here)
            return
        with self._cv:
            while not self.jobs.satisfied(want):
                self._raise()
                self._cv.wait(1.0)
            self._raise()

    @contextmanager
    def reserved(self, search: Resources, after: str | None = None) -> Iterator[None]:
        """While a search runs (the run's longest chain: its schedule's rows wait for it), new trainings get only
        what its trials leave; the ones already training go on. With ``after``, the share is kept from the moment
        that training (the one the search needs) finishes, before anything else can take what it frees."""
        with self._cv:
            self.jobs.reserve(search, after)
        try:
            yield
        finally:
            with self._cv:
                self.jobs.release()
                self._cv.notify_all()

    def _raise(self) -> None:
        if self._ray is not None and self._ray.error is not None:
            raise self._ray.error

    def _train_here(self, job: Job) -> None:
        """One job in this process, announced, with its time recorded."""
        self.say(f"── {job.role}: {job.title or job.key}, seed {job.seed}" + after_line(self.eta(self.slots)))
        t0 = time.perf_counter()
        self.train_here(job, self.cfg.network(job.role).train.cpus)
        self.record_time(job.key, time.perf_counter() - t0)

    def _start_ray(self) -> None:
        """Hand the queue to a Ray submitter (imported only now: Ray is slow to import, and a run in process never
        needs it)."""
        from .ray_trainings import RayTrainings

        self._ray = RayTrainings(self.cfg, self.prep, self.out, self.address, self.jobs, self._cv,
                                 record_time=self.record_time, say=self.say, eta=lambda: self.eta(self.slots))
        self.slots.update(self._ray.start())
