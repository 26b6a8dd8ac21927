"""`rolekd run`: stage α, stage β, the baselines in the same run, and the report.

Every training in the run is a *row*: a role, a schedule (none, the teacher's A_T or the student's
A_S), KD or not, and agents. Rows and searches write into their own folders; a finished one is
recognised from its files, so ``--resume`` skips it and continues the one in flight.
"""

from __future__ import annotations

import json
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, ContextManager, Literal

from ..config import ExperimentConfig, TrainingConfig
from ..training import atomic_write_json
from .eta import SUMMARY, after_line, PlannedSearch, PlannedTraining, RunEta
from .folders import CONFIG_FILE, OutputFolderError, claim_folder, releases_claims, seed_folder
from .parallel import Job, Resources, Trainings, job_label, torch_threads, train_job
from .preflight import Training, preflight, validate_names
from .schedule_plan import PlannedSchedule, plan_schedules, published_schedule
from .setup import Prepared, prepare
from .stages import TeacherHandle, load_teacher

ScheduleRef = str | None  # a PlannedSchedule's ref: "A_T", "A_S", "A_S[1]", "pba-rcifar10"
ProgressFactory = Callable[[str, int], ContextManager[Callable | None]]


@dataclass(frozen=True)
class Row:
    key: str
    label: str
    role: Literal["teacher", "student"]
    schedule: ScheduleRef = None
    kd: bool = False
    agents: tuple[str, ...] = ()
    folder: str = ""
    baseline: str | None = None  # the pipeline.baselines entry that switches this row on
    warm_start: bool = False  # without KD: start from the teacher's weights all the same
    cutout: int | None = None  # the cutout after its schedule (pipeline.extra_cutouts); None: data.schedule_cutout

    @property
    def needs_teacher(self) -> bool:
        return self.kd or self.warm_start

    def epochs(self, cfg: TrainingConfig) -> int:
        """How long this row trains: its role's ``train.epochs`` (its job carries it down to the Trainer)."""
        return cfg.network(self.role).train.epochs


PAPER_ROWS = [
    Row("teacher_alpha", "Teacher + A_T (stage α)", "teacher", "A_T", folder="stage_alpha/teacher"),
    Row("teacher_vanilla", "Teacher, baseline augmentation", "teacher", folder="baselines/teacher_vanilla",
        baseline="teacher_vanilla"),
    Row("student_beta", "Student + KD + A_S (stage β, role-wise)", "student", "A_S", True, folder="stage_beta/student"),
    Row("student_kd", "Student + KD, baseline augmentation", "student", None, True, folder="baselines/student_kd",
        baseline="student_kd"),
    Row("student_kd_teacher_schedule", "Student + KD + A_T (teacher's schedule)", "student", "A_T", True,
        folder="baselines/student_kd_teacher_schedule", baseline="student_kd_teacher_schedule"),
    Row("student_warm_start", "Student warm-started from the teacher, no KD", "student",
        folder="baselines/student_warm_start", baseline="student_warm_start", warm_start=True),
    Row("student_teacher_schedule", "Student from scratch + A_T, no KD (Table 2: teacher after stage α)", "student",
        "A_T", folder="baselines/student_teacher_schedule", baseline="student_teacher_schedule"),
    Row("student_vanilla", "Student from scratch, no KD", "student", folder="baselines/student_vanilla",
        baseline="student_vanilla"),
]

def skipped_rows(cfg: ExperimentConfig) -> dict[str, str]:
    """Rows switched on but meaningless for this config, with the reason (shown in the report)."""
    skipped = {}
    if "student_warm_start" in cfg.pipeline.baselines:
        s, t = cfg.student, cfg.teacher
        if s.init_from != "teacher":
            skipped["student_warm_start"] = "student.init_from is 'scratch': no row starts from the teacher"
        elif (s.model, s.model_args) != (t.model, t.model_args):
            skipped["student_warm_start"] = (f"the student ({s.model} {dict(s.model_args)}) is not the teacher's "
                                             f"architecture ({t.model} {dict(t.model_args)}): it cannot start from it")
    return skipped


def plan_rows(cfg: ExperimentConfig) -> list[Row]:
    """The run's rows: the paper's (stage β's once per independent search), one per published student schedule,
    and every student row with a schedule again for each cutout of ``pipeline.extra_cutouts``."""
    from ..agents import agent_label
    from .schedule_plan import plan_schedules, slug, student_searches

    skipped = skipped_rows(cfg)
    paper = [r for r in PAPER_ROWS if (r.baseline is None or r.baseline in cfg.pipeline.baselines)
             and r.key not in skipped]
    paper += [Row(f"student_beta_{name}", f"Student + KD + A_S + {agent_label(name)}", "student", "A_S", True,
                  (name,), folder=f"stage_beta/student_{name}") for name in cfg.student.agents]
    rows = []
    for row in paper:
        if row.schedule != "A_S" or cfg.pipeline.search_seeds is None:
            rows.append(row)
            continue
        for search in student_searches(cfg):
            rows.append(replace(row, key=f"{row.key}_search{search.search_seed}", schedule=search.ref,
                                label=row.label.replace("A_S", search.ref, 1),
                                folder=f"{search.folder}/{Path(row.folder).name}"))
    for plan in plan_schedules(cfg):
        if not plan.searched:
            rows.append(Row(f"student_kd_{slug(plan.ref)}", f"Student + KD + {plan.ref} (published, not searched here)",
                            "student", plan.ref, True, folder=f"baselines/student_kd_{slug(plan.ref)}"))
    default = cfg.data.resolved_schedule_cutout
    extra = [c for c in cfg.pipeline.extra_cutouts if c != default]
    rows += [replace(r, key=f"{r.key}_cutout{c}", label=f"{r.label}, cutout {c}", folder=f"{r.folder}_cutout{c}",
                     cutout=c) for c in extra for r in list(rows) if r.role == "student" and r.schedule]
    return rows


@dataclass
class RunState:
    """Wall time per stage, kept on disk so a resumed run reports the total (added to from the trainings' thread)."""

    path: Path
    times: dict[str, float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def load(cls, path: Path) -> "RunState":
        return cls(path, json.loads(path.read_text()) if path.is_file() else {})

    def add(self, stage: str, seconds: float) -> None:
        with self.lock:
            self.times[stage] = self.times.get(stage, 0.0) + seconds
            atomic_write_json(self.path, self.times)


RunFolderError = OutputFolderError  # the name rolekd run has always raised


def given_schedule(cfg: ExperimentConfig) -> Path | None:
    """The schedule file ``pipeline.stage_alpha.schedule`` names (a schedule JSON, a run folder whose
    stage α searched it, or a packaged schedule's name such as ``pba-rcifar10``), checked before any
    training; ``None`` when stage α searches its own. An existing path wins over a packaged name."""
    from ..augment.schedule import packaged_names_hint, packaged_schedules

    given = cfg.pipeline.stage_alpha.schedule
    if not given:
        return None
    path = Path(given).resolve()  # relative to the working directory, as every path of a config
    if not path.exists() and given in packaged_schedules():
        return packaged_schedules()[given]
    if path.is_dir():
        path = path / "stage_alpha" / "schedule.json"
    if not path.is_file():
        why = f" ({cfg.pipeline.stage_alpha.note})" if cfg.pipeline.stage_alpha.note else ""
        raise FileNotFoundError(
            f"pipeline.stage_alpha.schedule: {path} not found{why}; expected a schedule JSON, the folder of a "
            f"rolekd run whose stage α searched it, or a packaged schedule's name ({packaged_names_hint()})"
        )
    return path


def claim_run_folder(cfg: ExperimentConfig, out: Path, resume: bool) -> None:
    """A run folder belongs to one config: refuse to mix, never overwrite silently (its progress starts with
    the config it records, so an existing ``config.yaml`` already needs ``--resume``)."""
    claim_folder(cfg, out, resume, progress=CONFIG_FILE)


class Pipeline:
    def __init__(
        self,
        cfg: ExperimentConfig,
        out: str | Path,
        resume: bool = False,
        data_dir: str | None = None,
        progress: ProgressFactory | None = None,
        say: Callable[[str], None] = print,
        prep: Prepared | None = None,
        address: str | None = None,
    ) -> None:
        self.cfg, self.out, self.resume, self.data_dir = cfg, Path(out), resume, data_dir
        self.address = address or cfg.search.address  # the searches' and the trainings' Ray cluster
        self.progress = progress or (lambda label, epochs: nullcontext(None))
        self.say = say
        self.prep = prep
        self.schedules: dict[str, Any] = {}
        self.sources: dict[str, str] = {}  # where each schedule came from, for the report
        self.teachers: dict[int, TeacherHandle] = {}

    # -- stages ----------------------------------------------------------------------------------
    @releases_claims
    def run(self) -> dict[str, Any]:
        cfg = self.cfg
        validate_names(cfg)
        given_schedule(cfg)
        self.plans = {plan.ref: plan for plan in plan_schedules(cfg)}
        for plan in self.plans.values():
            if not plan.searched:
                published_schedule(plan)  # a missing or unreadable one fails now, not after hours of training
        claim_run_folder(cfg, self.out, self.resume)
        self.state = RunState.load(self.out / "timings.json")
        if self.prep is None:
            self.prep = prepare(cfg, self.data_dir)
        if any(self._will_search(plan) for plan in self.plans.values()):
            self.prep.search_indices(cfg)  # a search split that cannot be carved fails now, not after a training
        rows = self.rows
        preflight(cfg, self.prep, [Training(r.label, r.role, r.kd, r.warm_start, r.agents, r.schedule is not None)
                                   for r in rows], say=self.say)
        self.eta = self._plan_eta(rows)
        trainings = Trainings(cfg.training(), self.prep, self.out, address=self.address, cap=cfg.pipeline.max_parallel,
                              train_here=self._train, record_time=self.state.add, say=self.say, eta=self.eta.line)
        self.slots = trainings.slots
        searches = [plan for plan in self.plans.values() if plan.role == "student"]
        with trainings:
            self._stage("stage α: teacher schedule A_T", lambda: self._schedule(self.plans["A_T"]))
            for plan in self.plans.values():
                if not plan.searched:
                    self._schedule(plan)
            trainings.add(self._jobs([r for r in rows if r.schedule not in self.plans
                                      or self.plans[r.schedule].role != "student"]))  # all but A_S's rows, at once
            teacher = self._teacher_label(cfg.pipeline.seeds[0])  # the one stage β distils from
            with trainings.reserved(self._search_share(), after=teacher):  # its trials first, the rest go on beside
                for plan in searches:
                    if self._will_search(plan):
                        trainings.wait([teacher])
                    title = f"stage β: student schedule {plan.ref}" + (
                        f" (search {searches.index(plan) + 1} of {len(searches)}, seed {plan.search_seed})"
                        if len(searches) > 1 else "")
                    self._stage(title, lambda: self._schedule(plan), key="stage β")
                    trainings.add(self._jobs([r for r in rows if r.schedule == plan.ref]))
            trainings.wait()
        from .report import write_report

        return write_report(self.out, cfg, rows, self.state.times, self.schedules, self.sources, self.plans)

    def _stage(self, title: str, work: Callable[[], Any], key: str | None = None) -> Any:
        self.say(f"── {title}" + after_line(self.eta.line(self.slots)))
        t0 = time.perf_counter()
        result = work()
        self.state.add(key or title.split(":")[0], time.perf_counter() - t0)
        return result

    def _schedule(self, plan: PlannedSchedule) -> Any:
        """Search (or reuse, or copy the published) schedule ``plan``; the result is its ``schedule.json``."""
        from ..augment.schedule import Schedule

        cfg = self.cfg
        path = self.out / plan.folder / "schedule.json"
        given = given_schedule(cfg) if plan.ref == "A_T" else None
        if not plan.searched:
            if not path.is_file():
                published_schedule(plan).save(path)
            self.sources[plan.ref] = plan.stage
        elif given is not None:
            note = cfg.pipeline.stage_alpha.note
            self.sources[plan.ref] = f"given by pipeline.stage_alpha.schedule: {given}" + (f" ({note})" if note else "")
            self.say(f"   {self.sources[plan.ref]}, not searched")
            Schedule.load(given).save(path)
        elif not path.is_file():
            if not self._needs_schedule(plan):
                return None
            from .search_stage import search_command

            teacher = self._teacher_path(cfg.pipeline.seeds[0]) if plan.role == "student" else None
            self.eta.searching = plan.role
            try:
                search_command(cfg, plan.role, teacher, self.out / plan.folder / "search", address=self.address,
                               resume=self.resume, data_dir=self.data_dir, prep=self.prep, seed=plan.search_seed)
            finally:
                self.eta.searching = None
            found = Schedule.load(self.out / plan.folder / "search" / "schedule.json")
            found.save(path)
        else:
            self.say(f"   reusing {path}")
        self.sources.setdefault(plan.ref, f"searched in this run ({plan.folder}/search, seed {plan.search_seed})")
        self.schedules[plan.ref] = Schedule.load(path)
        return self.schedules[plan.ref]

    @cached_property
    def rows(self) -> list[Row]:
        """The run's rows, planned once (the config does not change while it runs)."""
        return plan_rows(self.cfg)

    def _needs_schedule(self, plan: PlannedSchedule) -> bool:
        return any(r.schedule == plan.ref for r in self.rows)

    def _will_search(self, plan: PlannedSchedule) -> bool:
        """Whether ``_schedule(plan)`` will run a search (not given, not found from an earlier session)."""
        given = plan.ref == "A_T" and given_schedule(self.cfg) is not None
        return (plan.searched and not given and self._needs_schedule(plan)
                and not (self.out / plan.folder / "schedule.json").is_file())

    def _search_share(self) -> Resources:
        """What stage β's search trials take, all at once (kept from trainings that start while it runs)."""
        if not any(self._will_search(plan) for plan in self.plans.values() if plan.role == "student"):
            return Resources(0.0, 0.0)
        s = self.cfg.search
        gpus = s.gpus_per_trial if self.cfg.device != "cpu" else 0.0
        return Resources(s.population * s.cpus_per_trial, s.population * gpus)

    def _plan_eta(self, rows: list[Row]) -> RunEta:
        """What the run's ETA counts: every row x seed, and the searches this run will still make."""
        cfg = self.cfg
        trainings = [PlannedTraining(r.role, seed_folder(self.out / r.folder, seed), r.epochs(cfg))
                     for seed in cfg.pipeline.seeds for r in rows]
        searches = [PlannedSearch(plan.role, self.out / plan.folder / "search",
                                  cfg.search.population * cfg.search_epochs(plan.role))
                    for plan in self.plans.values() if plan.searched
                    and (self._will_search(plan) or (self.out / plan.folder / "search" / SUMMARY).is_file())]
        return RunEta(trainings, searches)

    def _teacher_path(self, seed: int) -> str:
        teacher_row = next(r for r in PAPER_ROWS if r.key == "teacher_alpha")
        return str(seed_folder(self.out / teacher_row.folder, seed) / "last.pt")

    def _teacher_label(self, seed: int) -> str:
        """The training that writes ``_teacher_path(seed)``."""
        return job_label("teacher_alpha", seed)

    def _teacher(self, seed: int) -> TeacherHandle:
        if seed not in self.teachers:
            self.teachers[seed] = load_teacher(self._teacher_path(seed), self.cfg, self.prep)
        return self.teachers[seed]

    def _jobs(self, rows: list[Row]) -> list[Job]:
        """The rows' trainings, seed by seed in row order (the order a sequential run trains them); a student on
        the teacher waits for the stage-α teacher of its seed."""
        jobs = []
        for seed in self.cfg.pipeline.seeds:
            for row in rows:
                epochs = row.epochs(self.cfg)
                schedule = self.schedules.get(row.schedule) if row.schedule else None
                jobs.append(Job(row.key, row.role, seed, seed_folder(self.out / row.folder, seed), epochs,
                                schedule.stretch(epochs) if schedule is not None else None,
                                self._teacher_path(seed) if row.needs_teacher else None, row.kd, row.agents, row.label,
                                after=self._teacher_label(seed) if row.needs_teacher else None, cutout=row.cutout))
        return jobs

    def _train(self, job: Job, cpus: float | None) -> None:
        """One job in this process (one training fits at a time), with its progress bar."""
        teacher = self._teacher(job.seed) if job.teacher else None
        with self.progress(job.label, job.epochs) as callback, torch_threads(cpus):
            train_job(self.cfg, self.prep, job, teacher, callback)


def run_pipeline(cfg: ExperimentConfig, out: str | Path, **kwargs) -> dict[str, Any]:
    return Pipeline(cfg, out, **kwargs).run()
