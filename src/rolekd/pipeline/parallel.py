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
"""

from __future__ import annotations

import math
import os
import threading
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch

from .. import raycluster
from ..atomic import append_jsonl
from ..augment.schedule import Schedule
from ..config import TrainConfig, TrainingConfig
from ..training import load_checkpoint
from .eta import after_line, clock, epoch_times
from .setup import Prepared
from .stages import Role, TeacherHandle

RETRIES = 2  # a training whose worker dies is started again this many times, from its last checkpoint
POLL_S = 2.0
RECORD = "trainings.jsonl"  # one line per training run on Ray: where it ran and for how long


def job_label(key: str, seed: int) -> str:
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

    @property
    def label(self) -> str:
        return job_label(self.key, self.seed)

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
                        agents=job.agents, epochs=job.epochs, resume=True, callback=callback, seed=job.seed)
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
        self.cfg, self.prep, self.out, self.address, self.cap = cfg, prep, out, address, cap
        self.train_here, self.record_time, self.say = train_here, record_time, say
        self.eta = eta or (lambda slots: "")
        cpus, gpus = os.cpu_count() or 1, self._local_gpus()
        self.resources = {role: training_resources(self._train_cfg(role), cpus, gpus) for role in ("teacher", "student")}
        self.slots = {role: self._at_once(res, cpus, gpus) for role, res in self.resources.items()}
        self.on_ray = address is not None or max(self.slots.values()) > 1
        self.queue: list[Job] = []
        self.finished: set[str] = set()
        self.running: dict[Any, Job] = {}
        self.error: BaseException | None = None
        self._cv = threading.Condition()
        self._closing = False
        self.capacity = Resources(float(cpus), float(gpus))  # this machine's; Ray's own once it runs
        self._reserved = Resources(0.0, 0.0)
        self._reserve_after: tuple[str, Resources] | None = None
        self._thread: threading.Thread | None = None
        self._stack = ExitStack()

    def _train_cfg(self, role: str) -> TrainConfig:
        return self.cfg.network(role).train

    def _local_gpus(self) -> int:
        """This machine's GPUs, none when the config says ``device: cpu`` (its trainings then take no GPU)."""
        return 0 if self.cfg.device == "cpu" else raycluster.local_gpus()

    def _at_once(self, res: Resources, cpus: float, gpus: float) -> int:
        """Trainings of ``res`` at once in ``cpus``/``gpus``: at least one (a training larger than the machine runs
        alone), at most ``pipeline.max_parallel``."""
        return max(1, raycluster.slots(cpus, gpus, res.cpus, res.gpus, self.cap))

    def __enter__(self) -> "Trainings":
        return self

    def __exit__(self, *exc: Any) -> None:
        with self._cv:
            self._closing = True
            self._cv.notify_all()
        if self._thread is not None:
            self._thread.join()
        self._cancel()  # left running only when the run stops early
        self._stack.close()

    def add(self, jobs: Sequence[Job]) -> None:
        """Queue ``jobs``; a finished one (found complete in its folder) is skipped."""
        with self._cv:
            self._raise()
            known = self._known() | {j.label for j in jobs}
            for job in jobs:
                if job.after is not None and job.after not in known:
                    raise ValueError(f"{job.label} waits for {job.after}, which is not a training of this run")
            for job in jobs:
                if job.complete:
                    self.say(f"   done already: {job.label} ({job.folder})")
                    self._finish(job)
                else:
                    self.queue.append(job)
            self._cv.notify_all()
        if self.on_ray and self.queue and self._thread is None:
            self._start()

    def wait(self, labels: Sequence[str] | None = None) -> None:
        """Until the trainings ``labels`` (default: every one added) have finished."""
        want = None if labels is None else set(labels)
        with self._cv:
            known = self._known()
        if want and not want <= known:
            raise ValueError(f"cannot wait for {sorted(want - known)}: not trainings of this run")
        if not self.on_ray:
            self._train_until(want)
            return
        with self._cv:
            while not self._satisfied(want):
                self._raise()
                self._cv.wait(1.0)
            self._raise()

    def _known(self) -> set[str]:
        """The labels of every training added: finished, queued or running."""
        return {*self.finished, *(j.label for j in [*self.queue, *self.running.values()])}

    def _satisfied(self, want: set[str] | None) -> bool:
        return not self.queue and not self.running if want is None else want <= self.finished

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error

    def _ready(self) -> list[Job]:
        return [j for j in self.queue if j.after is None or j.after in self.finished]

    def _next_up(self) -> list[Job]:
        """The ready jobs, those others wait for (teachers) first: they unblock the most."""
        awaited = {j.after for j in self.queue}
        return sorted(self._ready(), key=lambda j: j.label not in awaited)

    # -- in this process, in order ------------------------------------------------------------------------
    def _train_until(self, want: set[str] | None) -> None:
        while not self._satisfied(want):
            ready = self._ready()
            if not ready:
                raise RuntimeError(f"trainings {sorted(want - self.finished) if want else self.queue} cannot start: "
                                   "what they wait for is not queued")
            job = ready[0]
            self.say(f"── {job.role}: {job.title or job.key}, seed {job.seed}" + after_line(self.eta(self.slots)))
            t0 = time.perf_counter()
            self.train_here(job, self._train_cfg(job.role).cpus)
            self.record_time(job.key, time.perf_counter() - t0)
            with self._cv:
                self.queue.remove(job)
                self._finish(job)

    # -- on Ray -----------------------------------------------------------------------------------------
    def _start(self) -> None:
        """Join or start Ray (in this thread: ``ray.init`` wants the main one), then submit from a thread."""
        import ray

        from ..plugins import plugin_state
        from .setup import share

        self._stack.enter_context(raycluster.ray_session(self.address, os.cpu_count() or 1, self._local_gpus()))
        ray_has = raycluster.cluster_resources()
        if self.cfg.device == "cpu":
            ray_has = ray_has._replace(gpus=0.0, node_gpus=0)
        cpus, gpus = ray_has.cpus, ray_has.gpus
        self.capacity = Resources(cpus, gpus)
        where = f"the Ray cluster at {self.address}" if self.address else f"a local Ray ({cpus:g} CPUs)"
        for role in ("teacher", "student"):
            self.resources[role] = res = training_resources(self._train_cfg(role), ray_has.node_cpus, ray_has.node_gpus)
            self.slots[role] = self._at_once(res, cpus, gpus)
            self.say(f"── {role} trainings: {self.slots[role]} at once on {where}, {res.line()}")
        self._data = ray.put(share(self.prep.full, self.prep.normalizer))
        self._plugins = plugin_state()
        self._thread = threading.Thread(target=self._loop, name="rolekd-trainings", daemon=True)
        self._thread.start()

    @contextmanager
    def reserved(self, search: Resources, after: str | None = None) -> Iterator[None]:
        """While a search runs (the run's longest chain: its schedule's rows wait for it), new trainings get only
        what its trials leave; the ones already training go on. With ``after``, the share is kept from the moment
        that training (the one the search needs) finishes, before anything else can take what it frees."""
        with self._cv:
            if after is None or after in self.finished:
                self._reserved = search
            else:
                self._reserve_after = (after, search)
        try:
            yield
        finally:
            with self._cv:
                self._reserved, self._reserve_after = Resources(0.0, 0.0), None
                self._cv.notify_all()

    def _finish(self, job: Job) -> None:
        """Mark ``job`` finished (holding the lock)."""
        self.finished.add(job.label)
        if self._reserve_after is not None and self._reserve_after[0] == job.label:
            self._reserved, self._reserve_after = self._reserve_after[1], None
        self._cv.notify_all()

    def _fits(self, job: Job) -> bool:
        held = Resources(min(self._reserved.cpus, self.capacity.cpus), min(self._reserved.gpus, self.capacity.gpus))
        if not self.running and not (held.cpus or held.gpus):
            return True  # a training larger than the machine still runs, alone
        if self.cap and len(self.running) >= self.cap:
            return False
        res = self.resources[job.role]
        used = [held, *(self.resources[j.role] for j in self.running.values())]
        free = (self.capacity.cpus - sum(r.cpus for r in used), self.capacity.gpus - sum(r.gpus for r in used))
        return raycluster.slots(*free, res.cpus, res.gpus) >= 1

    def _submit(self) -> None:
        """Start what is ready and fits: first the trainings others wait for (teachers), then in queue order."""
        import ray

        for job in self._next_up():
            if not self._fits(job):
                continue
            res = self.resources[job.role]
            task = ray.remote(_remote_job).options(num_cpus=res.cpus, num_gpus=res.gpus, max_retries=RETRIES)
            device = "cuda" if res.gpus else "cpu"
            self.running[task.remote(self.cfg, self._data, job, self._plugins, res.cpus, device)] = job
            self.queue.remove(job)

    def _loop(self) -> None:
        import ray

        board = _Board(self.say, lambda: self.eta(self.slots))
        try:
            while True:
                with self._cv:
                    if self._closing:
                        return
                    self._submit()
                    refs = list(self.running)
                    if not refs:
                        self._cv.wait(POLL_S)
                        continue
                done, _ = ray.wait(refs, num_returns=1, timeout=POLL_S)
                for ref in done:
                    job = self.running[ref]
                    result = _result(ref, job)
                    self.record_time(job.key, result["wall_s"])
                    _append_record(self.out / RECORD, job, result)
                    board.finished(job, result)
                    with self._cv:
                        del self.running[ref]
                        self._finish(job)
                board.show(list(self.running.values()))
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting driver, which raises it
            self.say(f"   a training failed ({exc}); the others stop, --resume continues them")
            self._cancel()
            with self._cv:
                self.error = exc
                self._cv.notify_all()

    def _cancel(self) -> None:
        """Stop the trainings in flight at once; their last checkpoints stay for ``--resume``."""
        with self._cv:
            if not self.running:
                return
            import ray

            for ref in list(self.running):
                ray.cancel(ref, force=True)
            self.running.clear()


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
    """One line per finished training, appended (the file is never rewritten; a torn last line is cut off)."""
    append_jsonl(path, {"row": job.key, "seed": job.seed, "folder": str(job.folder), "node": result["node"],
                        "pid": result["pid"], "wall_s": result["wall_s"]})


class _Board:
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
