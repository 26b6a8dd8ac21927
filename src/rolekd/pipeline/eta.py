"""The whole run's time left, for `rolekd run`'s progress lines.

From what the run has measured so far, read back from its folders (so a resumed run knows its earlier epochs): the
seconds per epoch of each role's trainings (their ``metrics.jsonl``), and the wall time per trial-epoch of a
finished search (its ``search_summary.json``). The trainings and searches still to come are added up as if one
after another, a role's trainings divided by how many of them run at once; what cannot be estimated yet is named
instead of guessed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from ..atomic import read_jsonl
from .stages import Role

SUMMARY = "search_summary.json"


@dataclass(frozen=True)
class PlannedTraining:
    role: Role
    folder: Path
    epochs: int


@dataclass(frozen=True)
class PlannedSearch:
    role: Role
    folder: Path  # the search's own folder: its summary says it is done and how long it took
    trial_epochs: int  # population x epochs

    def wall_per_trial_epoch(self) -> float | None:
        """Seconds of wall time per trial-epoch, once the search has finished."""
        try:
            summary = json.loads((self.folder / SUMMARY).read_text())
            return float(summary["wall_time_s"]) / self.trial_epochs
        except (OSError, ValueError, KeyError, TypeError):
            return None


def epoch_times(folder: Path) -> list[float]:
    """Seconds of each finished epoch of the training in ``folder`` (none when it has not started)."""
    try:
        return [row["time_s"] for row in read_jsonl(folder / "metrics.jsonl")]  # a line being written is skipped
    except (OSError, ValueError, KeyError):
        return []  # not started


class RunEta:
    """``run ETA 1:02:03``, or a lower bound naming what is not measured yet."""

    def __init__(self, trainings: list[PlannedTraining], searches: list[PlannedSearch]) -> None:
        self.trainings, self.searches = trainings, searches
        self.searching: Role | None = None  # the search in progress now, if any (it shows its own ETA)

    def line(self, slots: Mapping[str, int]) -> str:
        """The time left (empty while nothing is measured); ``slots``: how many trainings of each role run at
        once."""
        done: dict[str, list[float]] = {}
        left: dict[str, list[int]] = {}  # epochs left, per training of the role
        for t in self.trainings:
            times = epoch_times(t.folder)
            done.setdefault(t.role, []).extend(times)
            left.setdefault(t.role, []).append(max(0, t.epochs - len(times)))
        per_epoch = {role: sum(ts) / len(ts) for role, ts in done.items() if ts}
        seconds, unknown = 0.0, []
        for role, epochs in left.items():
            if not any(epochs):
                continue
            if role in per_epoch:  # shared by the role's slots, but never less than its longest training left
                seconds += per_epoch[role] * max(sum(epochs) / max(1, slots.get(role, 1)), max(epochs))
            else:
                unknown.append(f"{role} trainings")
        for search in self.searches:
            if search.wall_per_trial_epoch() is not None:
                continue
            if search.role == self.searching:
                unknown.append(f"{search.role} search in progress")
                continue
            estimate = self._search_estimate(search, per_epoch)
            if estimate is None:
                unknown.append(f"{search.role} search")
            else:
                seconds += estimate
        if not unknown:
            return f"run ETA {clock(seconds)}"
        if not seconds:
            return ""  # nothing measured yet: nothing to say
        return f"run ETA > {clock(seconds)} (+ {', '.join(unknown)}: not measured yet)"

    def _search_estimate(self, search: PlannedSearch, per_epoch: Mapping[str, float]) -> float | None:
        """A search not started yet: a finished one's wall time per trial-epoch, scaled by how much slower this
        role's training epochs are than that one's (needs both roles' epochs measured)."""
        for other in self.searches:
            rate = other.wall_per_trial_epoch()
            if rate is None or other is search:
                continue
            if other.role == search.role:
                return rate * search.trial_epochs
            if search.role in per_epoch and other.role in per_epoch:
                return rate * per_epoch[search.role] / per_epoch[other.role] * search.trial_epochs
        return None


def clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def after_line(eta: str) -> str:
    """`` │ run ETA …`` to end a progress line with, or nothing."""
    return f" │ {eta}" if eta else ""
