"""Which of a run's trainings may start now: the queue, what runs and what has finished, and the search's share.

Pure bookkeeping (no Ray, no threads, no files), so the order trainings start in can be tested on its own: a job
starts once the job it waits for (``Job.after``, its teacher) has finished, those others wait for first, and only in
what the trainings in flight and a running search leave free. Whoever shares a queue between threads locks it.
"""

from __future__ import annotations

from typing import Any, Sequence

from .. import raycluster
from .jobs import Job
from .resources import NOTHING, Resources


class JobQueue:
    """The run's trainings by state: queued, running (by the key its executor tracks it by) and finished (labels)."""

    def __init__(self, resources: dict[str, Resources], capacity: Resources, cap: int | None = None) -> None:
        self.resources = resources  # what one training of each role takes
        self.capacity = capacity  # the machine's, or the Ray cluster's once trainings run there
        self.cap = cap  # pipeline.max_parallel
        self.queued: list[Job] = []
        self.running: dict[Any, Job] = {}
        self.finished: set[str] = set()
        self.reserved = NOTHING
        self._reserve_after: tuple[str, Resources] | None = None

    # -- jobs in and out ------------------------------------------------------------------------------------
    def known(self) -> set[str]:
        """The labels of every training added: finished, queued or running."""
        return {*self.finished, *(j.label for j in [*self.queued, *self.running.values()])}

    def check(self, jobs: Sequence[Job]) -> None:
        """Every ``after`` of ``jobs`` names a training of this run (known, or among ``jobs``)."""
        known = self.known() | {j.label for j in jobs}
        for job in jobs:
            if job.after is not None and job.after not in known:
                raise ValueError(f"{job.label} waits for {job.after}, which is not a training of this run")

    def add(self, job: Job) -> None:
        self.queued.append(job)

    def start(self, job: Job, key: Any) -> None:
        """``job`` leaves the queue and runs, tracked by ``key``."""
        self.queued.remove(job)
        self.running[key] = job

    def stop(self, key: Any) -> Job:
        """The job running under ``key`` has finished."""
        job = self.running.pop(key)
        self.finish(job)
        return job

    def finish(self, job: Job) -> None:
        """Mark ``job`` finished (also one found complete, never queued); a reservation waiting for it is kept now,
        before anything else can take what it frees."""
        self.finished.add(job.label)
        if self._reserve_after is not None and self._reserve_after[0] == job.label:
            self.reserved, self._reserve_after = self._reserve_after[1], None

    def satisfied(self, want: set[str] | None) -> bool:
        """Whether the trainings ``want`` (``None``: every one added) have finished."""
        return not self.queued and not self.running if want is None else want <= self.finished

    # -- what may start -------------------------------------------------------------------------------------
    def ready(self) -> list[Job]:
        """The queued jobs whose ``after`` has finished, in queue order."""
        return [j for j in self.queued if j.after is None or j.after in self.finished]

    def next_up(self) -> list[Job]:
        """The ready jobs, those others wait for (teachers) first: they unblock the most."""
        awaited = {j.after for j in self.queued}
        return sorted(self.ready(), key=lambda j: j.label not in awaited)

    def fits(self, job: Job) -> bool:
        """Whether ``job`` fits beside the trainings running and the search's share."""
        held = Resources(min(self.reserved.cpus, self.capacity.cpus), min(self.reserved.gpus, self.capacity.gpus))
        if not self.running and not (held.cpus or held.gpus):
            return True  # a training larger than the machine still runs, alone
        if self.cap and len(self.running) >= self.cap:
            return False
        res = self.resources[job.role]
        used = [held, *(self.resources[j.role] for j in self.running.values())]
        free = (self.capacity.cpus - sum(r.cpus for r in used), self.capacity.gpus - sum(r.gpus for r in used))
        return raycluster.slots(*free, res.cpus, res.gpus) >= 1

    def take(self) -> Job | None:
        """The job to start now: the first of ``next_up`` that fits, or ``None``."""
        return next((job for job in self.next_up() if self.fits(job)), None)

    # -- a search's share -------------------------------------------------------------------------------------
    def reserve(self, share: Resources, after: str | None = None) -> None:
        """Keep ``share`` from trainings that start from now on, or (``after``) from when that training finishes."""
        if after is None or after in self.finished:
            self.reserved = share
        else:
            self._reserve_after = (after, share)

    def release(self) -> None:
        """The search is over: its share is free again."""
        self.reserved, self._reserve_after = NOTHING, None
