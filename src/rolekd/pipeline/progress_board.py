"""The lines that follow trainings running as Ray tasks: one per epoch each, with its ETA and the run's."""

from __future__ import annotations

from typing import Any, Callable

from .eta import after_line, clock, epoch_times
from .jobs import Job


class Board:
    """One line per training in flight when its epoch changes (row, seed, epoch, its ETA), and the run's ETA."""

    def __init__(self, say: Callable[[str], None], eta: Callable[[], str]) -> None:
        self.say, self.eta = say, eta
        self.shown: dict[str, int] = {}

    def finished(self, job: Job, result: dict[str, Any]) -> None:
        acc = result["last"].get("val_acc")
        shown = f", test {100 * acc:.2f}%" if acc is not None else ""
        self.say(f"   finished {job.label}{shown}" + after_line(self.eta()))

    def show(self, running: list[Job]) -> None:
        eta = None  # the run's ETA reads every training's metrics: once a round, and only when a line is due
        for job in running:
            epochs = epoch_times(job.folder)
            if not epochs or self.shown.get(job.label) == len(epochs):
                continue
            self.shown[job.label] = len(epochs)
            left = (job.epochs - len(epochs)) * (sum(epochs) / len(epochs))
            eta = self.eta() if eta is None else eta
            self.say(f"   {job.label}: epoch {len(epochs)}/{job.epochs}, ETA {clock(left)}" + after_line(eta))
