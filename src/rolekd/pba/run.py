"""Population based augmentation on Ray Tune's PBT scheduler, and the schedule it leaves behind.

:func:`run_search` starts (or joins) Ray, runs ``population`` :class:`PolicyTrial` s for
``epochs`` iterations under :class:`PopulationBasedTraining` with PBA's explore, then picks the
trial with the best final validation accuracy and writes its per-epoch policies as a schedule.

Files in ``out_dir``::

    schedule.json        the best trial's schedule (rolekd.schedule JSON)
    history.jsonl        one line per exploit (see rolekd.pba.lineage)
    search_summary.json  best trial, every trial's final accuracy, exploits, wall time
    ray/                 Ray Tune's own records: per-trial progress.csv, TensorBoard events,
                         checkpoints, experiment state (what --resume restores)
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import ray
from ray import tune
from ray.tune.schedulers import PopulationBasedTraining, TrialScheduler

from ..atomic import make_dirs
from ..augment.policy import Policy
from ..augment.schedule import Schedule
from ..config import SearchConfig
from ..raycluster import RayError, local_cpus, local_gpus, logger_level, ray_session, slots
from ..training import atomic_write_json, atomic_write_text, load_checkpoint
from .callbacks import HistoryRecorder, SearchProgress
from .explore import PolicyExplorer
from .lineage import read_history, reconstruct
from .trainable import CHECKPOINT_FILE, PolicyTrial, TrainerFactory

EXPERIMENT = "ray"
HISTORY = "history.jsonl"
SCHEDULE = "schedule.json"
SUMMARY = "search_summary.json"
RESUMES = "resumes.jsonl"  # one line per --resume: the epoch each trial continued from
TUNER_STATE = "tuner.pkl"  # what Tuner.restore needs; written before the first trial starts
MAX_FAILURES = 2  # a crashed/NaN trial is restarted from its last checkpoint this often, then dropped
KEEP_CHECKPOINTS = 4  # per trial; a paused clone still needs its source's latest (PBT warns at <= 2)

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
) -> SearchResult:
    """Search a per-epoch policy schedule; ``factory(factory_args, trial_seed)`` builds each trial.

    Each trial trains ``epochs`` (default ``search_cfg.epochs``). ``factory_args`` goes to Ray's object store once and is shared by every trial (put the data
    there as numpy arrays). ``use_gpu`` gives each trial ``search_cfg.gpus_per_trial`` of a GPU.
    Ray is joined at ``address`` (a cluster) when given, else reused when already initialised, else
    started locally and shut down again at the end.
    """
    epochs = epochs if epochs is not None else search_cfg.epochs
    if epochs is None:
        raise ValueError("run_search: expected the trials' epochs (epochs=, or search_cfg.epochs)")
    out = Path(out_dir).resolve()
    experiment = out / EXPERIMENT
    restore = _resumable(experiment, resume)
    if not restore:
        (out / HISTORY).unlink(missing_ok=True)  # left by a search whose Ray records are gone
        (out / RESUMES).unlink(missing_ok=True)
    make_dirs(out)
    if restore:
        _record_resume(out, experiment)
    recorder = HistoryRecorder(out / HISTORY)
    display = SearchProgress(label, search_cfg.population, epochs, recorder) if progress else None
    if display is not None:
        display.note(_session_line(search_cfg, epochs, address, use_gpu, restore))
        warning = _population_warning(search_cfg, address, use_gpu)
        if warning:
            display.note(warning)
    t0 = time.perf_counter()
    local = (local_cpus(search_cfg.cpus_per_trial, search_cfg.max_concurrent), local_gpus() if use_gpu else 0)
    with ray_session(address, *local) as ray_start_s, _quiet_tune():
        if use_gpu and address and not ray.cluster_resources().get("GPU"):
            use_gpu = False  # a CPU-only cluster: trials asking for a GPU share would wait forever
            if display is not None:
                display.note(f"the cluster at {address} has no GPU: trials run on CPUs only")
        trainable = tune.with_resources(
            tune.with_parameters(PolicyTrial, factory=factory, factory_args=factory_args),
            {"cpu": search_cfg.cpus_per_trial, "gpu": search_cfg.gpus_per_trial if use_gpu else 0},
        )
        if restore:
            tuner = tune.Tuner.restore(str(experiment), trainable, resume_unfinished=True, resume_errored=True)
        else:
            callbacks = [recorder] + ([display] if display is not None else [])
            tuner = _new_tuner(trainable, search_cfg, epochs, out, callbacks, seed,
                               _fits_at_once(search_cfg, address, use_gpu))
        results = tuner.fit()
        timing = {"wall_time_s": round(time.perf_counter() - t0, 2), "ray_start_s": round(ray_start_s, 2)}
    return _finish(results, search_cfg, epochs, out, timing)


def _session_line(cfg: SearchConfig, epochs: int, address: str | None, use_gpu: bool, restore: bool) -> str:
    what = "continuing" if restore else "starting"
    if address:
        where = f"Ray cluster {address}"
    else:
        cpus = local_cpus(cfg.cpus_per_trial, cfg.max_concurrent)
        where = "the running Ray" if ray.is_initialized() else f"a local Ray ({cpus} CPUs)"
    share = f", {cfg.gpus_per_trial:g} GPU" if use_gpu else ""
    return f"{what} {cfg.population} trials x {epochs} epochs on {where}, {cfg.cpus_per_trial:g} CPU{share} per trial"


def _population_warning(cfg: SearchConfig, address: str | None, use_gpu: bool) -> str | None:
    """PBT compares trials at the same epoch; a population run in waves compares nothing useful."""
    if address or use_gpu or ray.is_initialized():
        return None
    cpus = local_cpus(cfg.cpus_per_trial, cfg.max_concurrent)
    at_once = slots(cpus, 0, cfg.cpus_per_trial, 0)
    if at_once >= cfg.population:
        return None
    share = math.floor(100 * cpus / cfg.population) / 100
    return (f"warning: only {at_once} of {cfg.population} trials fit at once on {cpus} CPUs, so the population runs in "
            f"waves and exploits are rare; expected search.cpus_per_trial <= {share:g} to run it all at once")


def _resumable(experiment: Path, resume: bool) -> bool:
    """Whether to restore; ``resume`` with nothing recorded yet starts the search afresh."""
    recorded = (experiment / TUNER_STATE).is_file()
    if recorded and not resume:
        raise SearchError(f"{experiment.parent} already holds a search; pass --resume to continue it or choose another --out")
    return recorded and resume


def checkpointed_epochs(experiment: Path) -> dict[str, int]:
    """trial id -> the epoch of its latest checkpoint: where a restored search continues each trial from."""
    epochs = {}
    for trial_dir in sorted(p for p in experiment.iterdir() if p.is_dir()):
        latest = sorted(trial_dir.glob(f"checkpoint_*/{CHECKPOINT_FILE}"))
        if latest:
            state = load_checkpoint(latest[-1])
            epochs[str(state.get("trial_id", trial_dir.name))] = int(state.get("epoch", 0))
    return epochs


def _record_resume(out: Path, experiment: Path) -> None:
    lines = [json.dumps({"epochs": checkpointed_epochs(experiment)})]
    if (out / RESUMES).is_file():
        lines = (out / RESUMES).read_text().splitlines() + lines
    atomic_write_text(out / RESUMES, "\n".join(lines) + "\n")


def _read_resumes(out: Path) -> list[dict[str, int]]:
    path = out / RESUMES
    return [json.loads(line)["epochs"] for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


class _PopulationBasedTraining(PopulationBasedTraining):
    """Ray's PBT, without time-sharing when the whole population runs at once.

    At each perturbation point Ray pauses a trial whenever another one is paused or pending, so that
    a population larger than the slots takes turns. When every trial has a slot, the only paused
    trial is one being exploited, and the pause just swaps trials between actors (a checkpoint saved
    and restored each time): measured on the demo, trials sat idle for two thirds of the search.
    """

    def __init__(self, *args: Any, time_share: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._time_share = time_share
        self._cloned: dict[str, tuple[str, int]] = {}  # target id -> (source id, checkpoint time) it last cloned

    def _checkpoint_or_exploit(self, trial: Any, tune_controller: Any, upper_quantile: list, lower_quantile: list) -> None:
        """Ray's choice, except that a trial never clones the same checkpoint twice.

        An exploit resumes the target from the source's latest checkpoint, which is behind the target when
        the source runs slower. If the retrained target is still in the bottom quantile before the source
        has saved again, Ray clones that same checkpoint again and again (measured: one demo trial rewound
        to the same epoch 4 times, 6 of 23 exploits). Such a trial now continues instead.
        """
        if trial in lower_quantile:
            fresh = [t for t in upper_quantile
                     if self._cloned.get(trial.trial_id) != (t.trial_id, self._trial_state[t].last_perturbation_time)]
            if not fresh:
                lower_quantile = [t for t in lower_quantile if t is not trial]
            else:
                source = random.choice(fresh)
                upper_quantile = [source]  # Ray picks at random from this list: the one chosen here
                self._cloned[trial.trial_id] = (source.trial_id, self._trial_state[source].last_perturbation_time)
        super()._checkpoint_or_exploit(trial, tune_controller, upper_quantile, lower_quantile)

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        decision = super().on_trial_result(tune_controller, trial, result)
        if decision == TrialScheduler.PAUSE and not self._time_share:
            return TrialScheduler.CONTINUE
        return decision


def _fits_at_once(cfg: SearchConfig, address: str | None, use_gpu: bool) -> bool:
    """Whether this process's own Ray runs the whole population at once: the one it starts, or one it already runs
    (``rolekd run``'s, whose trainings leave the search its trials' share). A cluster's free share is not known."""
    if address:
        return False
    if ray.is_initialized():
        total = ray.cluster_resources()
        cpus, gpus = total.get("CPU", 0.0), total.get("GPU", 0.0)
    else:
        cpus, gpus = local_cpus(cfg.cpus_per_trial, cfg.max_concurrent), local_gpus() if use_gpu else 0
    return slots(cpus, gpus, cfg.cpus_per_trial, cfg.gpus_per_trial if use_gpu else 0) >= cfg.population


def _new_tuner(
    trainable: Any, cfg: SearchConfig, epochs: int, out: Path, callbacks: list[tune.Callback], seed: int | None,
    all_at_once: bool = False,
) -> tune.Tuner:
    """Asynchronous PBT, as PBA ran it on Ray 0.7: at each of its perturbation points a trial in the
    bottom quantile of the population's latest scores clones a top-quantile trial. No barrier, so
    a dropped trial never holds the others up (Ray's ``synch=True`` waits for it forever)."""
    pbt = _PopulationBasedTraining(
        time_attr="training_iteration",
        metric="val_acc",
        mode="max",
        perturbation_interval=cfg.perturbation_interval,
        quantile_fraction=cfg.quantile,
        custom_explore_fn=PolicyExplorer(cfg.resample_probability, seed),
        time_share=not all_at_once,
    )
    return tune.Tuner(
        trainable,
        param_space={"policy": Policy.zeros().to_pba_list()},
        tune_config=tune.TuneConfig(
            scheduler=pbt, num_samples=cfg.population, reuse_actors=True,
            trial_dirname_creator=lambda trial: trial.trial_id,
        ),
        run_config=tune.RunConfig(
            name=EXPERIMENT,
            storage_path=str(out),
            stop={"training_iteration": epochs},
            verbose=0,
            callbacks=callbacks,
            failure_config=tune.FailureConfig(max_failures=MAX_FAILURES),
            checkpoint_config=tune.CheckpointConfig(
                num_to_keep=KEEP_CHECKPOINTS, checkpoint_frequency=cfg.perturbation_interval, checkpoint_at_end=True,
            ),
        ),
    )


@contextlib.contextmanager
def _quiet_tune() -> Iterator[None]:
    """Silence Tune's tables and per-trial log lines; our callbacks report instead.

    ``RAY_AIR_NEW_OUTPUT=0`` selects the reporter that prints nothing at ``verbose=0``; failed
    trials are reported by :class:`SearchProgress` and keep their tracebacks in ``error.txt``.
    """
    saved_env = os.environ.get("RAY_AIR_NEW_OUTPUT")
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    try:
        with contextlib.ExitStack() as stack:
            for name in ("ray.tune", "ray.train", "ray.air"):
                stack.enter_context(logger_level(name, logging.CRITICAL))
            yield
    finally:
        if saved_env is None:
            os.environ.pop("RAY_AIR_NEW_OUTPUT", None)
        else:
            os.environ["RAY_AIR_NEW_OUTPUT"] = saved_env


# ---- schedule extraction ------------------------------------------------------------------------


def _finish(results: tune.ResultGrid, cfg: SearchConfig, epochs: int, out: Path,
            timing: dict[str, float]) -> SearchResult:
    finals = _final_accuracies(results, epochs)
    unfinished = sum(1 for r in results if r.error is None and (r.metrics or {}).get("trial_id") not in finals)
    if unfinished:
        raise SearchError(f"the search stopped with {unfinished} trials unfinished; run it again with --resume to continue")
    if not finals:
        raise SearchError(f"no trial of the search finished its {epochs} epochs; see the error.txt files under {out / EXPERIMENT}")
    best_trial = max(finals, key=lambda t: finals[t][0])
    best_acc, checkpoint = finals[best_trial]
    schedule = _trial_schedule(checkpoint, epochs)
    history = read_history(out / HISTORY)
    matches = reconstruct(history, best_trial, epochs, Policy.zeros()).policies == schedule.policies
    if not matches:
        logger.warning("%s: the lineage rebuilt from %s differs from the schedule in %s's checkpoint; "
                       "the checkpoint's is kept", out, HISTORY, best_trial)
    schedule.save(out / SCHEDULE)
    atomic_write_json(out / SUMMARY, {
        "best_trial": best_trial,
        "best_val_acc": best_acc,
        "final_val_acc": {t: acc for t, (acc, _) in sorted(finals.items())},
        "failed_trials": sorted(Path(r.path).name for r in results if r.error),  # trial folders are named by id
        "exploits": len(history),
        "lineage_matches_history": matches,
        "resumes": _read_resumes(out),
        "epochs": epochs,
        "population": cfg.population,
        **timing,
    })
    return SearchResult(schedule, best_trial, best_acc, out / HISTORY, out / SCHEDULE, out / SUMMARY)


def _final_accuracies(results: tune.ResultGrid, epochs: int) -> dict[str, tuple[float, tune.Checkpoint]]:
    """trial id -> (final val_acc, final checkpoint) for trials that ran all ``epochs``."""
    finals = {}
    for r in results:
        m = r.metrics or {}
        if r.error is None and r.checkpoint is not None and m.get("epoch") == epochs:
            finals[m["trial_id"]] = (float(m["val_acc"]), r.checkpoint)
    return finals


def _trial_schedule(checkpoint: tune.Checkpoint, epochs: int) -> Schedule:
    """The policies a trial trained with, kept in its final checkpoint (clones inherit the past)."""
    with checkpoint.as_directory() as folder:
        policies = load_checkpoint(Path(folder) / CHECKPOINT_FILE)["policies"]
    if len(policies) != epochs:
        raise SearchError(f"{checkpoint.path}: holds {len(policies)} epochs of policies, expected {epochs}")
    return Schedule.from_policies([Policy.from_pba_list(p) for p in policies])
