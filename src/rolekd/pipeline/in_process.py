"""The run's trainings one after another in this process, in queue order: where one fits at a time and no cluster
is named, exactly as a sequential run trains them."""

from __future__ import annotations

from typing import Callable

from .job_queue import JobQueue
from .jobs import Job


def train_in_order(jobs: JobQueue, want: set[str] | None, train: Callable[[Job], None]) -> None:
    """Train the queue's ready jobs with ``train``, first queued first, until ``want`` (``None``: all) have finished;
    no further, so the driver can search before the rest."""
    while not jobs.satisfied(want):
        ready = jobs.ready()
        if not ready:
            raise RuntimeError(f"trainings {sorted(want - jobs.finished) if want else jobs.queued} cannot start: "
                               "what they wait for is not queued")
        job = ready[0]
        jobs.start(job, job.label)
        train(job)
        jobs.stop(job.label)
