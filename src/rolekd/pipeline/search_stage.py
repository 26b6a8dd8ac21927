"""`rolekd search`: a PBA schedule search for one role, wired from config to :mod:`rolekd.pba`.

The trial is built here, not in ``search`` (which must not know configs and roles): the
picklable :func:`make_trial_trainer` rebuilds, inside each Ray trial, the network, objective and
augmenters exactly as :func:`rolekd.pipeline.stages.train_network` does for the role, on the
reduced split shared through Ray's object store. Stage α (teacher) and stage β (student, KD from
a fixed teacher that sees the same augmented batch) differ only in the arguments handed over.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import torch

from ..augment.policy import Policy
from ..config import ExperimentConfig, TrainingConfig
from ..plugins import load_plugins, plugin_state
from ..pba import SearchResult, TrialParts, run_search
from ..pba.generations import STATE
from .folders import claim_folder, claim_teacher, releases_claims
from ..quant import load_network
from .setup import Prepared, prepare, resolve_device, share, unshare
from .stages import Role, TeacherHandle, build_role_trainer, check_objective, initialize_objective, load_teacher


@releases_claims
def search_command(
    cfg: ExperimentConfig,
    role: Role,
    teacher_path: str | Path | None = None,
    out_dir: str | Path | None = None,
    address: str | None = None,
    resume: bool = False,
    data_dir: str | None = None,
    progress: bool = True,
    prep: Prepared | None = None,
    claim: bool = False,
    seed: int | None = None,
) -> SearchResult:
    """Search the augmentation schedule of ``role`` and write ``schedule.json`` into ``out_dir``.

    ``prep`` reuses data already loaded by the caller (the pipeline); ``claim`` makes ``out_dir`` this
    search's own folder (``rolekd search``; a run's searches live in its claimed folder). Bad input (a student search
    without a teacher checkpoint, a missing checkpoint, a teacher of other classes, a trial that
    cannot be built, GPU trials without a GPU share) is a one-line ``ValueError`` before Ray starts.
    """
    if role == "student" and teacher_path is None:
        raise ValueError("--role student needs --teacher CHECKPOINT: the trained teacher to distil from")
    if role == "teacher" and teacher_path is not None:
        raise ValueError("--teacher is only for --role student; a teacher search trains the teacher itself")
    out = Path(out_dir) if out_dir is not None else Path("runs") / cfg.name / f"search_{role}"
    if claim:
        claim_folder(cfg, out, resume, STATE)
        if teacher_path is not None:
            claim_teacher(out, teacher_path, STATE)
    address = address or cfg.search.address
    use_gpu = _trials_use_gpu(cfg, address is not None)
    prep = prep or prepare(cfg, data_dir, device=torch.device("cpu"))
    teacher = load_teacher(teacher_path, cfg, prep) if teacher_path is not None else None
    args = search_args(cfg, role, prep, teacher)
    # fail here, not in 16 trials: build a trial and step it once (its objective stays uninitialised: a dry run)
    dry = make_trial_trainer(args, 0, device=torch.device("cpu"))
    if getattr(dry.trainer.objective, "needs_initialization", False):
        dry.trainer.objective.skip_initialization()
    dry.trainer.check_step()
    return run_search(
        make_trial_trainer, args, cfg.search, out, epochs=args["epochs"], address=address,
        use_gpu=use_gpu, resume=resume, progress=progress, label=f"search {role}",
        seed=cfg.seed if seed is None else seed,
        val_images=len(args["data"]["val"][1]),
    )


def _trials_use_gpu(cfg: ExperimentConfig, on_cluster: bool) -> bool:
    """Trials get a GPU share when the device is CUDA (on a cluster: when a share is configured)."""
    if cfg.device == "cpu":
        return False
    if on_cluster:
        return cfg.search.gpus_per_trial > 0
    if resolve_device(cfg.device).type != "cuda":
        return False
    if cfg.search.gpus_per_trial == 0:
        raise ValueError(
            "search.gpus_per_trial: the device is CUDA but trials get no GPU; expected a share such as 0.25 "
            "(4 trials per GPU), or device: cpu"
        )
    return True


def search_args(cfg: ExperimentConfig, role: Role, prep: Prepared, teacher: TeacherHandle | None) -> dict[str, Any]:
    """Everything a trial needs, as plain data: numpy uint8 images go to Ray's object store once."""
    reduced = prep.reduced(cfg)
    return {
        "config": cfg.training(),  # typed, validated once: the sections a training reads
        "role": role,
        "epochs": cfg.search_epochs(role),  # the role's recipe, its lr schedule spanning the search
        "plugins": plugin_state(),  # the user's --import modules: trials build their models too
        "data": share(reduced, prep.normalizer),
        "teacher": None if teacher is None else {
            "meta": teacher.meta, "path": teacher.path,
            "state": {k: v.cpu() for k, v in teacher.model.state_dict().items()},
        },
    }


def make_trial_trainer(args: dict[str, Any], trial_seed: int, device: torch.device | None = None) -> TrialParts:
    """Inside a Ray trial: the role's Trainer on the reduced split, and its policy augmenter (on ``device``,
    default the config's: the driver's dry run builds one on the CPU)."""
    load_plugins(args.get("plugins", {}))
    cfg: TrainingConfig = args["config"]
    role: Role = args["role"]
    device = device or resolve_device(cfg.device)
    prep = unshare(args["data"], device)
    teacher = _trial_teacher(args["teacher"], device)
    seed = trial_seed  # the search derives it from its own seed and the trial's index
    data = prep.full  # the reduced split: train / validation
    # no agents: the A_S search trains the student exactly as the stage-β row does (its agent rows are extra)
    parts = build_role_trainer(cfg, role, data, prep.normalizer, device, schedule=Policy.zeros(), teacher=teacher,
                               agents=(), epochs=args["epochs"], seed=seed)
    check_objective(parts.objective, data, prep.normalizer)  # cheap: fail while building (the driver's dry run)
    prepare = functools.partial(initialize_objective, parts.objective, cfg, data, prep, seed, args["epochs"])
    return TrialParts(parts.trainer, parts.augmenters[0], cfg.data.eval_batch_size, prepare)


def _trial_teacher(t: dict[str, Any] | None, device: torch.device) -> TeacherHandle | None:
    if t is None:
        return None
    loaded = load_network(t["state"], meta=t["meta"], device=device, label=f"teacher {t['path']}")
    return TeacherHandle(loaded.model.eval().requires_grad_(False), loaded.meta, t["path"])
