"""Population based augmentation as a generational search on Ray, and the schedule it leaves behind.

:func:`run_search` trains ``population`` trials in generations of ``perturbation_interval`` epochs. Every live trial
finishes a generation before any is ranked, so trials are always compared at the same epoch (a slow one holds its
generation back); then the bottom quantile clones the state a top-quantile trial holds at that point and explores
its policy (PBA's explore). Each generation's trial states go to disk before the search's state names them, so an
exploit never loses its source and a killed search resumes from its last complete generation. Every random choice
of the search comes from its own seeded generator, every trial's draws from (its seed, epoch): the same config,
seed and thread count give the same search, bit for bit on the CPU.

Files in ``out_dir``::

    schedule.json        the best trial's schedule (rolekd.schedule JSON)
    history.jsonl        one line per exploit (see rolekd.pba.lineage)
    search_summary.json  best trial, every trial's final accuracy, exploits, failures, wall time
    search_state.json    the population after the last complete generation (what --resume continues)
    states/gen_NNNN/     the trials' states named by search_state.json
    trials/<trial>/      each trial's progress.jsonl (one line per epoch) and TensorBoard events
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray

from ..atomic import make_dirs
from ..augment.policy import Policy
from ..augment.schedule import Schedule
from ..config import SearchConfig
from ..raycluster import RayError, local_cpus, local_gpus, ray_session, slots
from ..training import atomic_write_json, atomic_write_text
from ..training.events import MetricsLog
from .generations import (STATE, SearchState, load_state, prune_states, read_trial_state, save_state,
                          write_trial_state)
from .lineage import ExploitEvent, append_event, read_history, reconstruct
from .population import Trial, apply, exploit_and_explore, generation_ends, trial_name, trial_seed
from .progress import SearchProgress
from .trainable import Outcome, Task, TrainerFactory, TrialWorker

HISTORY = "history.jsonl"
SCHEDULE = "schedule.json"
SUMMARY = "search_summary.json"
TRIALS = "trials"
PROGRESS = "progress.jsonl"
MAX_FAILURES = 2  # a trial that crashes is restarted from its last state this often, then leaves the population
REFRESH_WAIT_S = 0.5  # the driver redraws the progress line at least this often while trials train
SEARCH_SE_GOAL = 0.005  # one accuracy's standard error (at 50 %) that lets a search tell trials 1 point apart

logger = logging.getLogger(__name__)


class SearchError(RayError):
    """The search could not produce a schedule; one line saying why and where to look."""


@dataclass
class SearchResult:
    schedule: Schedule
    best_trial: str
    best_acc: float
    history_path: Path
    schedule_path: Path
    summary_path: Path


def run_search(
    factory: TrainerFactory,
    factory_args: dict[str, Any],
    search_cfg: SearchConfig,
    out_dir: str | Path,
    *,
    epochs: int | None = None,
    address: str | None = None,
    use_gpu: bool = False,
    resume: bool = False,
    progress: bool = True,
    label: str = "search",
    seed: int | None = None,
    val_images: int | None = None,
) -> SearchResult:
    """Search a per-epoch policy schedule; ``factory(factory_args, trial_seed)`` builds each trial.

    Each trial trains ``epochs`` (default ``search_cfg.epochs``). ``factory_args`` goes to Ray's object store once
    and is shared by every trial (put the data there as numpy arrays). ``use_gpu`` gives each trial
    ``search_cfg.gpus_per_trial`` of a GPU. Ray is joined at ``address`` (a cluster) when given, else reused when
    already initialised, else started locally and shut down again at the end. ``val_images`` (the size of the
    split trials are ranked on) only feeds the warning that the search cannot tell its trials apart.
    """
    epochs = epochs if epochs is not None else search_cfg.epochs
    if epochs is None:
        raise ValueError("run_search: expected the trials' epochs (epochs=, or search_cfg.epochs)")
    out = make_dirs(Path(out_dir).resolve())
    state = _initial_state(out, search_cfg, epochs, seed or 0, resume)
    ends = generation_ends(epochs, search_cfg.perturbation_interval)
    display = SearchProgress(label, epochs, len(ends)) if progress else None
    say = display.note if display is not None else (lambda text: None)
    restored = state.generation > 0 or bool(state.resumes)
    say(_session_line(search_cfg, epochs, address, use_gpu, restored, state))
    warning = _signal_warning(val_images)
    if warning:
        say(warning)
    with ray_session(address, *_local_resources(search_cfg, use_gpu)) as ray_start_s:
        if use_gpu and address and not ray.cluster_resources().get("GPU"):
            use_gpu = False  # a CPU-only cluster: trials asking for a GPU share would wait forever
            say(f"the cluster at {address} has no GPU: trials run on CPUs only")
        workers = _Workers(factory, factory_args, search_cfg, use_gpu, say)
        say(workers.line(len(state.trials)))
        search = _Generations(state, search_cfg, out, workers, display, say)
        try:
            search.run(ends)
        finally:
            search.close()
            workers.close()
        state.clock["ray_start_s"] = state.clock.get("ray_start_s", 0.0) + round(ray_start_s, 2)
    return _finish(state, search_cfg, epochs, out)


def _initial_state(out: Path, cfg: SearchConfig, epochs: int, seed: int, resume: bool) -> SearchState:
    """The saved population (``resume``), or generation 0 of a new one; a folder holding a search needs ``resume``."""
    saved = load_state(out)
    if saved is not None and not resume:
        raise SearchError(f"{out} already holds a search; pass --resume to continue it or choose another --out")
    if saved is not None:
        expected = (seed, epochs, cfg.population, cfg.perturbation_interval)
        found = (saved.seed, saved.epochs, saved.population, saved.interval)
        if found != expected:
            raise SearchError(f"{out / STATE}: a search of (seed, epochs, population, interval) {found}, but this one "
                              f"is {expected}; resume it with its own settings or choose another --out")
        saved.resumes.append({name: t.epoch for name, t in sorted(saved.trials.items())})
        _truncate_history(out / HISTORY, saved.history_lines)
        prune_states(out, saved)
        return saved
    (out / HISTORY).unlink(missing_ok=True)  # left by a search killed before its first generation
    trials = {}
    for i in range(cfg.population):
        name = trial_name(i)
        trials[name] = Trial(name, trial_seed(seed, i), Policy.zeros().to_pba_list())
    return SearchState(seed, epochs, cfg.population, cfg.perturbation_interval, trials, random.Random(seed))


def _truncate_history(path: Path, lines: int) -> None:
    """Keep the exploits of the generations the state holds; a later generation's are made again."""
    if path.is_file():
        kept = path.read_text().splitlines()[:lines]
        atomic_write_text(path, "".join(line + "\n" for line in kept))


def _session_line(cfg: SearchConfig, epochs: int, address: str | None, use_gpu: bool, restored: bool,
                  state: SearchState) -> str:
    what = f"continuing at epoch {state.epoch}:" if restored else "starting"
    if address:
        where = f"Ray cluster {address}"
    else:
        where = "the running Ray" if ray.is_initialized() else f"a local Ray ({local_cpus(cfg.cpus_per_trial, cfg.max_concurrent)} CPUs)"
    share = f", {cfg.gpus_per_trial:g} GPU" if use_gpu else ""
    return (f"{what} {cfg.population} trials x {epochs} epochs in generations of {cfg.perturbation_interval} on "
            f"{where}, {cfg.cpus_per_trial:g} CPU{share} per trial")


def standard_error(n: int, acc: float = 0.5) -> float:
    """The binomial standard error of one accuracy measured on ``n`` images."""
    return math.sqrt(acc * (1 - acc) / n)


def _signal_warning(val_images: int | None) -> str | None:
    """A search ranks trials by validation accuracy; on too few images their differences are noise."""
    if not val_images or standard_error(val_images) <= SEARCH_SE_GOAL:
        return None
    se = 100 * standard_error(val_images)
    need = math.ceil(0.25 / SEARCH_SE_GOAL ** 2)
    return (f"warning: trials are ranked on {val_images} validation images, where one accuracy's standard error is "
            f"{se:.1f} points (at 50 %): differences of a point between trials are noise to this search; expected "
            f"at least {need} validation images (data.reduced_val) to tell them apart")


def _local_resources(cfg: SearchConfig, use_gpu: bool) -> tuple[int, int]:
    return local_cpus(cfg.cpus_per_trial, cfg.max_concurrent), (local_gpus() if use_gpu else 0)


class _Workers:
    """The search's Ray actors, one per slot; a dead one is replaced by a new one."""

    def __init__(self, factory: TrainerFactory, factory_args: dict[str, Any], cfg: SearchConfig, use_gpu: bool,
                 say: Any) -> None:
        self.cfg, self.say = cfg, say
        self.args_ref = ray.put(factory_args)
        self.remote = ray.remote(TrialWorker).options(
            num_cpus=cfg.cpus_per_trial, num_gpus=cfg.gpus_per_trial if use_gpu else 0, max_restarts=0,
            max_task_retries=0,
        )
        self.factory = factory
        self.slots = self._slots(use_gpu)
        self.actors = [self._new() for _ in range(min(self.slots, cfg.population))]

    def _slots(self, use_gpu: bool) -> int:
        """How many trials train at once: what fits in this process's Ray (or ``max_concurrent``)."""
        total = ray.cluster_resources()
        gpus_each = self.cfg.gpus_per_trial if use_gpu else 0.0
        return max(1, slots(total.get("CPU", 0.0), total.get("GPU", 0.0), self.cfg.cpus_per_trial, gpus_each,
                            self.cfg.max_concurrent))

    def _new(self) -> Any:
        return self.remote.remote(self.factory, self.args_ref, math.floor(self.cfg.cpus_per_trial) or 1)

    def replace(self, index: int) -> None:
        with contextlib.suppress(Exception):
            ray.kill(self.actors[index])
        self.actors[index] = self._new()

    def line(self, live: int) -> str:
        n = len(self.actors)
        if n >= live:
            return f"all {live} trials train at once"
        return (f"{n} of {live} trials train at once: each generation takes {math.ceil(live / n)} turns "
                f"(expected search.cpus_per_trial <= {math.floor(100 * n * self.cfg.cpus_per_trial / live) / 100:g} "
                "to train them all at once)")

    def close(self) -> None:
        for actor in self.actors:
            with contextlib.suppress(Exception):
                ray.kill(actor)
        self.actors = []


class _Generations:
    """The driver's loop: train every live trial to the next perturbation point, rank, exploit and explore, save."""

    def __init__(self, state: SearchState, cfg: SearchConfig, out: Path, workers: _Workers,
                 display: SearchProgress | None, say: Any) -> None:
        self.state, self.cfg, self.out, self.workers, self.display, self.say = state, cfg, out, workers, display, say
        self.logs = {name: MetricsLog(out / TRIALS / name, resume_epoch=t.epoch, filename=PROGRESS)
                     for name, t in state.trials.items()}
        self.measured = {name: t.val_acc for name, t in state.trials.items() if t.val_acc is not None}  # for the line
        self._t0 = time.perf_counter()
        self._done_trial_epochs = 0
        if display is not None:
            display.start()

    def run(self, ends: list[int]) -> None:
        state = self.state
        save_state(self.out, state)  # from here the folder holds this search (a resume is recorded too)
        for stop in ends:
            if stop <= state.epoch:
                continue
            t0 = time.perf_counter()
            busy, waited = self._train_generation(stop)
            wall = time.perf_counter() - t0
            state.generation += 1
            clock = state.clock
            for key, value in (("wall_time_s", wall), ("busy_s", busy), ("barrier_wait_s", waited)):
                clock[key] = round(clock.get(key, 0.0) + value, 3)
            if stop < state.epochs:
                self._exploit()
            save_state(self.out, state)
            prune_states(self.out, state)
        self._show(force=True)

    def _train_generation(self, stop: int) -> tuple[float, float]:
        """Every live trial to epoch ``stop``: returns the trials' busy seconds and their seconds at the barrier."""
        state, workers = self.state, self.workers
        queue = deque(sorted(state.trials))
        idle = list(range(len(workers.actors)))
        running: dict[Any, tuple[int, str]] = {}
        finished: dict[str, float] = {}
        busy = 0.0
        while queue or running:
            while queue and idle:
                index, name = idle.pop(0), queue.popleft()
                running[workers.actors[index].run.remote(self._task(name, stop))] = (index, name)
            done, _ = ray.wait(list(running), num_returns=1, timeout=REFRESH_WAIT_S)
            for ref in done:
                index, name = running.pop(ref)
                outcome = self._collect(ref, index, name)
                if outcome is None:
                    if name in state.trials:
                        queue.appendleft(name)
                else:
                    self._record(outcome, stop)
                    finished[name] = time.perf_counter()
                    busy += outcome.busy_s
                idle.append(index)
            self._show(running=len(running), waiting=len(finished))
        if not state.trials:
            raise SearchError(f"every trial of the search failed; see the tracebacks in {self.out / TRIALS}/*/error.txt")
        end = time.perf_counter()
        return busy, sum(end - t for t in finished.values())

    def _task(self, name: str, stop: int) -> Task:
        trial = self.state.trials[name]
        data = read_trial_state(self.out, trial.state) if trial.state else None
        return Task(name, trial.seed, trial.policy, data, stop)

    def _collect(self, ref: Any, index: int, name: str) -> Outcome | None:
        """The outcome, or None after a failure (the trial is retried from its last state, or leaves)."""
        try:
            return ray.get(ref)
        except ray.exceptions.RayActorError as exc:
            self.workers.replace(index)  # its process died: the next task gets a fresh one
            reason = f"its worker died ({type(exc).__name__})"
            detail = str(exc)
        except ray.exceptions.RayTaskError as exc:
            cause = exc.cause if getattr(exc, "cause", None) is not None else exc
            reason = f"{type(cause).__name__}: {str(cause).strip().splitlines()[0] if str(cause).strip() else ''}"
            detail = str(exc)
        trial = self.state.trials[name]
        trial.failures += 1
        error_file = self.out / TRIALS / name / "error.txt"
        error_file.parent.mkdir(parents=True, exist_ok=True)
        with open(error_file, "a") as f:
            f.write(f"--- failure {trial.failures} at epoch {trial.epoch}\n{detail}\n")
        if trial.failures > MAX_FAILURES:
            del self.state.trials[name]
            self.state.dropped[name] = reason
            self.say(f"trial {name} failed {trial.failures} times and leaves the population ({reason}; traceback "
                     f"in {error_file}); the search goes on with {len(self.state.trials)}")
        else:
            self.say(f"trial {name} failed ({reason}); restarting it from its state at epoch {trial.epoch}")
        return None

    def _record(self, outcome: Outcome, stop: int) -> None:
        trial = self.state.trials[outcome.name]
        trained = stop - trial.epoch
        trial.state = write_trial_state(self.out, self.state.generation + 1, trial.name, outcome.state)
        trial.policies += [list(trial.policy) for _ in range(trained)]
        trial.epoch = stop
        trial.val_acc = outcome.rows[-1].get("val_acc") if outcome.rows else None
        self.measured[trial.name] = trial.val_acc
        log = self.logs[trial.name]
        for row in outcome.rows:
            log.append({**row, "generation": self.state.generation + 1})
        self._done_trial_epochs += trained

    def _exploit(self) -> None:
        state, cfg = self.state, self.cfg
        decisions = exploit_and_explore(list(state.trials.values()), cfg.quantile, cfg.resample_probability, state.rng)
        for d in decisions:
            append_event(self.out / HISTORY, ExploitEvent(
                time=time.time(), target=d.target, source=d.source, epoch=state.trials[d.target].epoch,
                source_epoch=d.epoch, old_policy=Policy.from_pba_list(d.old_policy),
                new_policy=Policy.from_pba_list(d.new_policy)))
            apply(d, state.trials)
        state.history_lines += len(decisions)

    def _show(self, running: int = 0, waiting: int = 0, force: bool = False) -> None:
        if self.display is None:
            return
        trials = self.state.trials.values()
        left = sum(self.state.epochs - t.epoch for t in trials)
        rate = (time.perf_counter() - self._t0) / self._done_trial_epochs if self._done_trial_epochs else None
        self.display.update(self.state.generation, running, waiting, self.state.epoch,
                            [a for n, a in self.measured.items() if a is not None and n in self.state.trials],
                            self.state.history_lines,
                            rate * left if rate is not None else None, force=force)

    def close(self) -> None:
        for log in self.logs.values():
            log.close()
        if self.display is not None:
            self.display.stop()


# ---- schedule extraction ------------------------------------------------------------------------


def _finish(state: SearchState, cfg: SearchConfig, epochs: int, out: Path) -> SearchResult:
    finals = {name: t.val_acc for name, t in sorted(state.trials.items()) if t.epoch == epochs and t.val_acc is not None}
    if len(finals) < len(state.trials):
        raise SearchError(f"the search stopped with {len(state.trials) - len(finals)} trials unfinished; run it again "
                          "with --resume to continue")
    if not finals:
        raise SearchError(f"no trial of the search finished its {epochs} epochs; see the error.txt files under "
                          f"{out / TRIALS}")
    best_trial = max(finals, key=lambda name: (finals[name], -int(name.rsplit("_", 1)[-1])))
    policies = state.trials[best_trial].policies
    if len(policies) != epochs:
        raise SearchError(f"{best_trial} holds {len(policies)} epochs of policies, expected {epochs}")
    schedule = Schedule.from_policies([Policy.from_pba_list(p) for p in policies])
    history = read_history(out / HISTORY)
    matches = reconstruct(history, best_trial, epochs, Policy.zeros()).policies == schedule.policies
    if not matches:
        logger.warning("%s: the lineage rebuilt from %s differs from the schedule the driver kept for %s; "
                       "the driver's is kept", out, HISTORY, best_trial)
    schedule.save(out / SCHEDULE)
    clock = state.clock
    trial_time = clock.get("busy_s", 0.0) + clock.get("barrier_wait_s", 0.0)
    atomic_write_json(out / SUMMARY, {
        "best_trial": best_trial,
        "best_val_acc": finals[best_trial],
        "final_val_acc": finals,
        "failed_trials": sorted(state.dropped),
        "failures": state.dropped,
        "exploits": len(history),
        "lineage_matches_history": matches,
        "resumes": state.resumes,
        "epochs": epochs,
        "population": cfg.population,
        "generations": state.generation,
        "seed": state.seed,
        "wall_time_s": clock.get("wall_time_s", 0.0),
        "ray_start_s": clock.get("ray_start_s", 0.0),
        "barrier_wait_fraction": round(clock.get("barrier_wait_s", 0.0) / trial_time, 4) if trial_time else 0.0,
    })
    return SearchResult(schedule, best_trial, finals[best_trial], out / HISTORY, out / SCHEDULE, out / SUMMARY)
