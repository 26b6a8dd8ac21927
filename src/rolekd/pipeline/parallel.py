"""`rolekd run`'s independent trainings at once: rows x seeds as Ray tasks on every local slot, or on a cluster.

One training takes its role's ``train.cpus`` / ``train.gpus`` (default: one GPU each with CUDA, else all the CPUs,
so one at a time); as many run at once as fit, at most ``pipeline.max_parallel``. When one fits at a time and no
cluster is named, they train in this process one after another, exactly as a sequential run does. A Ray task
trains into the run folder's seed folder with ``resume=True``: a worker that dies is retried by Ray
(``max_retries``) and continues from its last checkpoint, and a finished training is recognised from its files
and skipped, wherever it ran. The run folder must therefore be reachable at the same path from every node; the
data goes through Ray's object store.
"""

from __future__ import annotations

import math
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch

from ..augment.schedule import Schedule
from ..config import TrainConfig, TrainingConfig
from ..training import atomic_write_text, load_checkpoint
from .setup import Prepared
from .stages import Role, TeacherHandle

RETRIES = 2  # a training whose worker dies is started again this many times, from its last checkpoint
POLL_S = 2.0
RECORD = "trainings.jsonl"  # one line per training run on Ray: where it ran and for how long


@dataclass(frozen=True)
class Job:
    """One training of a run: a row for one seed, with everything it needs besides the config and the data."""

    key: str
    role: Role
    seed: int
    folder: Path
    epochs: int
    schedule: Schedule | None = None
    teacher: str | None = None  # the teacher checkpoint (KD or a warm start)
    distill: bool = False
    agents: tuple[str, ...] = ()
    title: str = ""  # the row's words in the report

    @property
    def label(self) -> str:
        return f"{self.key} (seed {self.seed})"

    @property
    def complete(self) -> bool:
        last = self.folder / "last.pt"
        return last.is_file() and load_checkpoint(last).get("epoch") == self.epochs


@dataclass(frozen=True)
class Resources:
    cpus: float
    gpus: float

    def line(self) -> str:
        return f"{self.cpus:g} CPU" + (f", {self.gpus:g} GPU" if self.gpus else "") + " each"


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
    """How many trainings fit at once in ``cpus``/``gpus`` (at least one; at most ``cap``)."""
    n = int(cpus // res.cpus + 1e-9)
    if res.gpus:
        n = min(n, int(gpus // res.gpus + 1e-9))
    n = max(n, 1)
    return min(n, cap) if cap else n


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
    from .stages import train_network

    fit = train_network(cfg, prep, job.role, job.folder, schedule=job.schedule, teacher=teacher, distill=job.distill,
                        agents=job.agents, resume=True, callback=callback, seed=job.seed)
    return fit.last


def _remote_job(cfg: TrainingConfig, data: dict[str, Any], job: Job, plugins: dict[str, Any], cpus: float,
                device: str | None = None) -> dict[str, Any]:
    """Inside a Ray worker: the job, on the data of the object store, with the user's ``--import`` modules."""
    import ray

    from ..plugins import load_plugins
    from .setup import resolve_device, unshare
    from .stages import load_teacher

    load_plugins(plugins)
    t0 = time.perf_counter()
    with torch_threads(cpus):
        prep = unshare(data, resolve_device(device or cfg.device))
        teacher = load_teacher(job.teacher, cfg, prep) if job.teacher else None
        last = train_job(cfg, prep, job, teacher)
    ctx = ray.get_runtime_context()
    return {"last": last, "node": ctx.get_node_id(), "pid": os.getpid(), "wall_s": round(time.perf_counter() - t0, 2)}


class Trainings:
    """Runs a phase's jobs: in this process when one fits at a time locally, else as Ray tasks."""

    def __init__(self, cfg: TrainingConfig, prep: Prepared, out: Path, *, address: str | None, cap: int | None,
                 train_here: Callable[[Job, float | None], None], record_time: Callable[[str, float], None],
                 say: Callable[[str], None]) -> None:
        self.cfg, self.prep, self.out, self.address, self.cap = cfg, prep, out, address, cap
        self.train_here, self.record_time, self.say = train_here, record_time, say

    def run(self, jobs: Sequence[Job], role: Role) -> None:
        if not jobs:
            return
        train = self.cfg.teacher.train if role == "teacher" else self.cfg.student.train
        cpus, gpus = os.cpu_count() or 1, self._local_gpus()
        if self.address is None and at_once(training_resources(train, cpus, gpus), cpus, gpus, self.cap) == 1:
            for job in jobs:
                self.say(f"── {job.role}: {job.title or job.key}, seed {job.seed}")
                t0 = time.perf_counter()
                self.train_here(job, train.cpus)
                self.record_time(job.key, time.perf_counter() - t0)
            return
        self._on_ray(list(jobs), train)

    def _local_gpus(self) -> int:
        """This machine's GPUs, none when the config says ``device: cpu`` (its trainings then take no GPU)."""
        from ..pba.run import local_gpus

        return 0 if self.cfg.device == "cpu" else local_gpus()

    # -- on Ray -----------------------------------------------------------------------------------------
    def _on_ray(self, jobs: list[Job], train: TrainConfig) -> None:
        import ray

        from ..pba.run import ray_session
        from ..plugins import plugin_state
        from .setup import share

        todo = [j for j in jobs if not j.complete]
        for job in jobs:
            if job.complete:
                self.say(f"   done already: {job.label} ({job.folder})")
        if not todo:
            return
        with ray_session(self.address, os.cpu_count() or 1, self._local_gpus()):
            cpus, gpus, per_node = _cluster_resources()
            if self.cfg.device == "cpu":
                gpus, per_node = 0.0, (per_node[0], 0)
            res = training_resources(train, per_node[0], per_node[1])
            n = at_once(res, cpus, gpus, self.cap)
            where = f"the Ray cluster at {self.address}" if self.address else f"a local Ray ({cpus:g} CPUs)"
            self.say(f"── {len(todo)} {todo[0].role} trainings, {n} at once on {where}, {res.line()}")
            task = ray.remote(_remote_job).options(num_cpus=res.cpus, num_gpus=res.gpus, max_retries=RETRIES)
            data = ray.put(share(self.prep.full, self.prep.normalizer))
            plugins = plugin_state()
            device = "cuda" if res.gpus else "cpu"
            queue, pending = list(todo), {}
            board = _Board(todo, n, self.say)

            def submit() -> None:
                while queue and len(pending) < n:
                    job = queue.pop(0)
                    pending[task.remote(self.cfg, data, job, plugins, res.cpus, device)] = job

            submit()
            try:
                while pending:
                    done, _ = ray.wait(list(pending), num_returns=1, timeout=POLL_S)
                    for ref in done:
                        job = pending.pop(ref)
                        result = _result(ref, job)
                        self.record_time(job.key, result["wall_s"])
                        _append_record(self.out / RECORD, job, result)
                        board.finished(job, result)
                    submit()
                    board.show(list(pending.values()))
            except BaseException:
                for ref in pending:  # stop the others at once; their last checkpoints stay for --resume
                    ray.cancel(ref, force=True)
                raise


def _cluster_resources() -> tuple[float, float, tuple[int, int]]:
    """The Ray session's total CPUs and GPUs, and those of its largest node (what one training may take)."""
    import ray

    total = ray.cluster_resources()
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    per_node = max(((int(r.get("CPU", 0)), int(r.get("GPU", 0))) for r in nodes), default=(1, 0))
    return float(total.get("CPU", 1)), float(total.get("GPU", 0)), per_node


def _result(ref: Any, job: Job) -> dict[str, Any]:
    """A task's result; its own exception as itself (one line at the CLI), a worker that kept dying as one line."""
    import ray
    from ray.exceptions import RayTaskError, WorkerCrashedError

    try:
        return ray.get(ref)
    except RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, Exception):
            raise cause from None
        raise
    except WorkerCrashedError:
        raise RuntimeError(f"{job.label}: its worker died {RETRIES + 1} times; rolekd run --resume continues it from "
                           f"its last checkpoint in {job.folder}") from None


def _append_record(path: Path, job: Job, result: dict[str, Any]) -> None:
    import json

    line = {"row": job.key, "seed": job.seed, "folder": str(job.folder), "node": result["node"], "pid": result["pid"],
            "wall_s": result["wall_s"]}
    text = path.read_text() if path.is_file() else ""
    atomic_write_text(path, text + json.dumps(line) + "\n")


class _Board:
    """One line per training in flight when its epoch changes (row, seed, epoch, ETA), and the phase's ETA."""

    def __init__(self, jobs: list[Job], at_once: int, say: Callable[[str], None]) -> None:
        self.jobs, self.n, self.say = jobs, at_once, say
        self.shown: dict[str, int] = {}
        self.done: set[str] = set()
        self.epoch_s: list[float] = []

    def finished(self, job: Job, result: dict[str, Any]) -> None:
        self.done.add(job.label)
        acc = result["last"].get("val_acc")
        shown = f", test {100 * acc:.2f}%" if acc is not None else ""
        self.say(f"   finished {job.label}{shown} ({len(self.done)} of {len(self.jobs)}, {self._eta()})")

    def show(self, running: list[Job]) -> None:
        for job in running:
            epochs = _epoch_times(job.folder)
            if not epochs or self.shown.get(job.label) == len(epochs):
                continue
            self.shown[job.label] = len(epochs)
            self.epoch_s = [*self.epoch_s[-200:], epochs[-1]]
            left = (job.epochs - len(epochs)) * (sum(epochs) / len(epochs))
            self.say(f"   {job.label}: epoch {len(epochs)}/{job.epochs}, ETA {_clock(left)} │ {self._eta()}")

    def _eta(self) -> str:
        if not self.epoch_s:
            return "phase ETA ?"
        per_epoch = sum(self.epoch_s) / len(self.epoch_s)
        left = sum(j.epochs - self.shown.get(j.label, 0) for j in self.jobs if j.label not in self.done)
        return f"phase ETA {_clock(left * per_epoch / self.n)}"


def _epoch_times(folder: Path) -> list[float]:
    import json

    path = folder / "metrics.jsonl"
    try:
        return [json.loads(line)["time_s"] for line in path.read_text().splitlines() if line.strip()]
    except (OSError, ValueError, KeyError):
        return []  # not started, or a line being replaced right now


def _clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"
