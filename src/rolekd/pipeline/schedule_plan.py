"""The schedules a run trains rows with: the teacher's A_T (stage α), the student's A_S (stage β: one search, or
one per ``pipeline.search_seeds``), and the published ones of ``pipeline.student_schedules``.

Each has a *ref*, the name a row's ``schedule`` holds and the report shows (``A_T``, ``A_S``, ``A_S[1]``,
``pba-rcifar10``), and a folder in the run where its ``schedule.json`` (and, searched, its ``search/``) lives.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..config import ExperimentConfig
from .stages import Role

if TYPE_CHECKING:
    from ..augment.schedule import Schedule


@dataclass(frozen=True)
class PlannedSchedule:
    ref: str
    role: Role | None  # the role a search trains; None: published, not searched here
    folder: str  # relative to the run: schedule.json and search/ (searched) inside
    search_seed: int | None = None  # the search's own seed (None: published)
    source: str | None = None  # published: the packaged name or the schedule file the config gives

    @property
    def searched(self) -> bool:
        return self.role is not None

    @property
    def stage(self) -> str:
        """Words for messages and the report: which stage searched it, or that nobody here did."""
        if self.role == "teacher":
            return "stage α (teacher)"
        if self.role == "student":
            return "stage β (student, with KD)" + (f", search seed {self.search_seed}" if self.ref != "A_S" else "")
        return f"published ({self.source}), not searched in this run"


def searched_student_ref(search_seed: int) -> str:
    """A_S of one of several independent stage-β searches."""
    return f"A_S[{search_seed}]"


def slug(name: str) -> str:
    """A published schedule's name as a row key and folder part: ``pba-rcifar10``, ``my_schedule`` for a file."""
    stem = Path(name).stem if name.endswith(".json") else Path(name).name
    return re.sub(r"[^A-Za-z0-9_-]+", "_", stem).strip("_") or "schedule"


def plan_schedules(cfg: ExperimentConfig) -> list[PlannedSchedule]:
    """A_T, the student's searched schedules, then the published ones, in the order the run makes them."""
    p = cfg.pipeline
    plans = [PlannedSchedule("A_T", "teacher", "stage_alpha", cfg.seed)]
    if p.search_seeds is None:
        plans.append(PlannedSchedule("A_S", "student", "stage_beta", cfg.seed))
    else:
        plans += [PlannedSchedule(searched_student_ref(s), "student", f"stage_beta/search_seed{s}", s)
                  for s in p.search_seeds]
    published = [PlannedSchedule(name, None, f"published/{slug(name)}", source=name) for name in p.student_schedules]
    folders = [plan.folder for plan in published]
    clash = sorted({f for f in folders if folders.count(f) > 1})
    if clash:
        raise ValueError(f"pipeline.student_schedules: two schedules would share the folder {clash[0]}; expected "
                         "files of distinct names")
    return plans + published


def student_searches(cfg: ExperimentConfig) -> list[PlannedSchedule]:
    return [s for s in plan_schedules(cfg) if s.role == "student"]


def published_schedule(plan: PlannedSchedule) -> "Schedule":
    """The schedule a published plan names, read and checked (a one-line ``ScheduleError`` naming
    ``pipeline.student_schedules`` when it is missing or invalid)."""
    from ..augment.schedule import Schedule, ScheduleError

    try:
        return Schedule.load(plan.source)
    except ScheduleError as exc:
        raise ScheduleError(f"pipeline.student_schedules: {exc}") from None
