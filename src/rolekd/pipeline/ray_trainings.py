"""The run's trainings as Ray tasks: a thread of the driver submits each queued job once it is ready and fits, waits
on the tasks in flight, retries a task whose worker dies (from its last checkpoint) and stops them all on a failure.

Ray is imported here, and this module only once trainings go on Ray (``parallel.Trainings``): a run that trains in
process, and the CLI's start, do not pay for it.
"""

from __future__ import annotations

import os
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Callable

import ray
from ray.exceptions import RayTaskError, WorkerCrashedError

from .. import raycluster
from ..atomic import append_jsonl
from ..config import TrainingConfig
from ..plugins import load_plugins, plugin_state
from .job_queue import JobQueue
from .jobs import RECORD, Job, torch_threads, train_job
from .progress_board import Board
from .resources import Resources, local_gpus, role_resources, role_slots
from .setup import Prepared, resolve_device, share, unshare
from .stages import load_teacher

RETRIES = 2  # a training whose worker dies is started again this many times, from its last checkpoint
POLL_S = 2.0


def remote_job(cfg: TrainingConfig, data: dict[str, Any], job: Job, plugins: dict[str, Any], cpus: float,
               device: str | None = None) -> dict[str, Any]:
    """Inside a Ray worker: the job, on the data of the object store, with the user's ``--import`` modules."""
    load_plugins(plugins)
    t0 = time.perf_counter()
    with torch_threads(cpus):
        prep = unshare(data, resolve_device(device or cfg.device))
        teacher = load_teacher(job.teacher, cfg, prep) if job.teacher else None
        last = train_job(cfg, prep, job, teacher)
    ctx = ray.get_runtime_context()
    return {"last": last, "node": ctx.get_node_id(), "pid": os.getpid(), "wall_s": round(time.perf_counter() - t0, 2)}


class RayTrainings:
    """Submits ``jobs`` as Ray tasks from a thread, as they become ready and resources free; ``error`` holds what
    stopped it. Every touch of ``jobs`` holds ``lock``, which the driver shares (and waits on)."""

    def __init__(self, cfg: TrainingConfig, prep: Prepared, out: Path, address: str | None, jobs: JobQueue,
                 lock: threading.Condition, *, record_time: Callable[[str, float], None],
                 say: Callable[[str], None], eta: Callable[[], str]) -> None:
        self.cfg, self.prep, self.out, self.address, self.jobs, self.lock = cfg, prep, out, address, jobs, lock
        self.record_time, self.say, self.eta = record_time, say, eta
        self.error: BaseException | None = None
        self._closing = False
        self._thread: threading.Thread | None = None
        self._stack = ExitStack()

    def start(self) -> dict[str, int]:
        """Join or start Ray (in this thread: ``ray.init`` wants the main one), size the trainings on what it has,
        then submit from a thread; how many of each role fit at once."""
        session = raycluster.ray_session(self.address, os.cpu_count() or 1, local_gpus(self.cfg.device))
        self._stack.enter_context(session)
        ray_has = raycluster.cluster_resources()
        if self.cfg.device == "cpu":
            ray_has = ray_has._replace(gpus=0.0, node_gpus=0)
        capacity = Resources(ray_has.cpus, ray_has.gpus)
        resources = role_resources(self.cfg, ray_has.node_cpus, ray_has.node_gpus)
        slots = role_slots(resources, capacity, self.jobs.cap)
        with self.lock:
            self.jobs.capacity, self.jobs.resources = capacity, resources
        where = f"the Ray cluster at {self.address}" if self.address else f"a local Ray ({capacity.cpus:g} CPUs)"
        for role, res in resources.items():
            self.say(f"── {role} trainings: {slots[role]} at once on {where}, {res.line()}")
        self._data = ray.put(share(self.prep.full, self.prep.normalizer))
        self._plugins = plugin_state()
        self._thread = threading.Thread(target=self._loop, name="rolekd-trainings", daemon=True)
        self._thread.start()
        return slots

    def close(self) -> None:
        """Stop the thread, cancel what still trains (only when the run stops early), leave Ray."""
        with self.lock:
            self._closing = True
            self.lock.notify_all()
        if self._thread is not None:
            self._thread.join()
        self.cancel()
        self._stack.close()

    def _submit(self) -> None:
        """Start what is ready and fits: first the trainings others wait for (teachers), then in queue order."""
        while (job := self.jobs.take()) is not None:
            res = self.jobs.resources[job.role]
            task = ray.remote(remote_job).options(num_cpus=res.cpus, num_gpus=res.gpus, max_retries=RETRIES)
            device = "cuda" if res.gpus else "cpu"
            self.jobs.start(job, task.remote(self.cfg, self._data, job, self._plugins, res.cpus, device))

    def _loop(self) -> None:
        board = Board(self.say, self.eta)
        try:
            while True:
                with self.lock:
                    if self._closing:
                        return
                    self._submit()
                    refs = list(self.jobs.running)
                    if not refs:
                        self.lock.wait(POLL_S)
                        continue
                done, _ = ray.wait(refs, num_returns=1, timeout=POLL_S)
                for ref in done:
                    self._finished(ref, board)
                board.show(list(self.jobs.running.values()))
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting driver, which raises it
            self.say(f"   a training failed ({exc}); the others stop, --resume continues them")
            self.cancel()
            with self.lock:
                self.error = exc
                self.lock.notify_all()

    def _finished(self, ref: Any, board: Board) -> None:
        """A task is done: its result recorded and shown, its job finished (its own error raised)."""
        job = self.jobs.running[ref]
        result = task_result(ref, job)
        self.record_time(job.key, result["wall_s"])
        append_record(self.out / RECORD, job, result)
        board.finished(job, result)
        with self.lock:
            self.jobs.stop(ref)
            self.lock.notify_all()

    def cancel(self) -> None:
        """Stop the trainings in flight at once; their last checkpoints stay for ``--resume``."""
        with self.lock:
            for ref in list(self.jobs.running):
                ray.cancel(ref, force=True)
            self.jobs.running.clear()


def task_result(ref: Any, job: Job) -> dict[str, Any]:
    """A task's result; its own exception as itself (one line at the CLI), a worker that kept dying as one line."""
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


def append_record(path: Path, job: Job, result: dict[str, Any]) -> None:
    """One line of ``trainings.jsonl``: where the training ran (node, process) and its wall time — appended (the file
    is never rewritten; a torn last line is cut off)."""
    append_jsonl(path, {"row": job.key, "seed": job.seed, "folder": str(job.folder), "node": result["node"],
                        "pid": result["pid"], "wall_s": result["wall_s"]})
