"""One network trained for one role: the building block of `rolekd train`, `rolekd distill`, the
pipeline's stages and its baselines. It wires config to the training loop; it holds no training logic.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from ..augment.base import Augmenter
from ..augment.baseline import BaselineAugmenter
from ..config import NetworkConfig, Role, TrainingConfig
from ..data import Dataset, Normalizer
from ..quant import build_network, load_network
from ..training import CrossEntropy, FitResult, Objective, Trainer, fit, load_checkpoint, load_weights
from .networks import network_meta
from .setup import Prepared


@dataclass
class TeacherHandle:
    """A fixed, trained teacher: its network (eval mode, no gradients) and where it came from."""

    model: nn.Module
    meta: dict[str, Any]
    path: str


def load_teacher(path: str | Path, cfg: TrainingConfig, prep: Prepared) -> TeacherHandle:
    """Load a teacher checkpoint and check it fits the data before any training starts."""
    described = network_meta(cfg.teacher, prep.full.num_classes, prep.full.image_shape, "teacher")  # a bare state_dict
    loaded = load_network(path, meta=described, device=prep.device, label=f"teacher {path}")
    if loaded.meta.get("num_classes") != prep.full.num_classes:
        raise ValueError(
            f"teacher {path} predicts {loaded.meta.get('num_classes')} classes but dataset {prep.full.name!r} has "
            f"{prep.full.num_classes}; expected a teacher trained on this dataset"
        )
    return TeacherHandle(loaded.model.eval().requires_grad_(False), loaded.meta, str(path))


def build_augmenters(cfg: TrainingConfig, schedule: Any = None, agents: list[Augmenter] | None = None,
                     crop_padding: int | None = None, cutout: int | None = None) -> list[Augmenter]:
    """PBA's order: learned policy, then agents, then the baseline crop/flip and cutout.

    With a schedule (a search trial, or a row trained with A_T / A_S) the cutout is PBA's/role-kd's
    (``data.schedule_cutout``); without one it is ``data.cutout`` (the paper's baselines: none).
    ``crop_padding`` (default ``data.crop_padding``) and ``cutout`` (default as just said) are for experiments
    that vary them per row.
    """
    augs: list[Augmenter] = []
    if schedule is not None:
        from ..agents.policy import PolicyAugmenter

        augs.append(PolicyAugmenter(schedule))
    augs.extend(agents or [])
    d = cfg.data
    padding = d.crop_padding if crop_padding is None else crop_padding
    cut = augmentation_cutout(cfg, schedule is not None) if cutout is None else cutout
    augs.append(BaselineAugmenter(padding, d.flip, cut))
    return augs


def augmentation_cutout(cfg: TrainingConfig, scheduled: bool) -> int:
    """The cutout side a row gets: PBA's after a searched schedule, the baselines' otherwise."""
    return cfg.data.resolved_schedule_cutout if scheduled else cfg.data.cutout


def build_objective_for(
    cfg: TrainingConfig, student: nn.Module, teacher: TeacherHandle | None, net: NetworkConfig, distill: bool = True
) -> Objective:
    if teacher is None or not distill:
        return CrossEntropy(net.train.label_smoothing)
    from ..kd import build_objective

    return build_objective(cfg.distill, teacher.model, student, student_taps=cfg.student.taps,
                           teacher_taps=cfg.teacher.taps, label_smoothing=net.train.label_smoothing)


def check_objective(objective: Objective, data: Dataset, normalizer: Normalizer) -> None:
    """Teacher and student fit together (taps, channels): a one-line error on a few images, before training."""
    check = getattr(objective, "check", None)
    if check is not None:
        check(data.train.images[: min(8, len(data.train))], normalizer)


def initialize_objective(objective: Objective, cfg: TrainingConfig, data: Dataset, prep: Prepared, seed: int,
                         epochs: int) -> None:
    """The method's own initialisation phase (MHGD's attention network) on augmented training batches, for a
    share of the student's ``epochs``."""
    if getattr(objective, "needs_initialization", False):
        from ..kd import initialization_epochs

        epochs = initialization_epochs(cfg.distill.init_epochs, epochs)
        if epochs == 0:
            objective.skip_initialization()  # role-kd's setting: the attention network stays random
            return
        batches = _augmented_batches(cfg, data, epochs, seed, prep.normalizer.fill)
        objective.initialize(batches, prep.normalizer)


def _augmented_batches(cfg: TrainingConfig, data: Dataset, epochs: int, seed: int, fill: tuple[int, ...]):
    from ..augment.base import AugmentContext, Batch
    from ..data import batch_indices

    aug = BaselineAugmenter(cfg.data.crop_padding, cfg.data.flip, 0)
    train = data.train
    for epoch in range(epochs):
        gen = torch.Generator(device=train.device).manual_seed(seed * 1_000_003 + epoch + 911)
        ctx = AugmentContext(epoch, epochs, gen, fill)
        for idx in batch_indices(len(train), cfg.student.train.batch_size, gen, True, train.device):
            yield aug(Batch(train.images[idx], train.labels[idx]), ctx).images


def warm_start_from_teacher(student: nn.Module, meta: dict[str, Any], teacher: TeacherHandle) -> bool:
    """Paper §5.1: a student of the teacher's architecture starts from the teacher's weights."""
    if meta["model"] != teacher.meta.get("model") or meta["model_args"] != teacher.meta.get("model_args"):
        return False
    from ..quant import warm_start

    warm_start(student, teacher.model.state_dict())
    return True


@dataclass
class RoleParts:
    """What one role trains with: the loop, its objective (for its initialisation) and the network's meta."""

    trainer: Trainer
    objective: Objective
    augmenters: list[Augmenter]
    meta: dict[str, Any]


def build_role_trainer(
    cfg: TrainingConfig,
    role: Role,
    data: Dataset,
    normalizer: Normalizer,
    device: torch.device,
    *,
    schedule: Any = None,
    teacher: TeacherHandle | None = None,
    distill: bool = True,
    agents: Sequence[str] = (),
    epochs: int | None = None,
    crop_padding: int | None = None,
    cutout: int | None = None,
    seed: int,
) -> RoleParts:
    """The configured network for ``role`` with its objective and augmenters, as every stage,
    baseline and search trial trains it: the one place config turns into a :class:`Trainer`.

    A student with a ``teacher`` is distilled with ``cfg.distill`` (warm-started from the teacher
    when the architectures match and ``student.init_from`` is ``teacher``); with ``distill=False``
    the teacher only warm-starts it and it trains on labels alone, as it does without a teacher.
    ``agents`` (names, configured from ``cfg.agents``) run after the schedule; only students have them.
    ``epochs`` (default: the role's ``train.epochs``) is the run's length, a search's for a trial;
    ``crop_padding`` (default ``data.crop_padding``) the baseline crop of this training, ``cutout`` (default the
    config's for a training with or without a schedule) its final cutout.
    """
    net = cfg.network(role)
    torch.manual_seed(seed)
    meta = network_meta(net, data.num_classes, data.image_shape, role)
    model = build_network(meta).to(device)
    if net.checkpoint:  # a resumed run's last.pt overrides this in fit()
        load_weights(model, load_checkpoint(net.checkpoint, device), f"{role}.checkpoint {net.checkpoint}", meta)
    elif role == "student" and teacher is not None and cfg.student.init_from == "teacher":
        meta["warm_started"] = warm_start_from_teacher(model, meta, teacher)
    objective = build_objective_for(cfg, model, teacher, net, distill)
    built: list[Augmenter] = []
    if agents:
        require_student_role(role, agents)
        from ..agents import build_agents

        built = build_agents(list(agents), cfg)
    augmenters = build_augmenters(cfg, schedule, built, crop_padding, cutout)
    trainer = Trainer(
        model, data.train, data.test, objective, augmenters, net.train, normalizer, seed=seed,
        context_models={"teacher": teacher.model} if teacher is not None else {}, epochs=epochs,
    )
    meta["seed"] = seed
    return RoleParts(trainer, objective, augmenters, meta)


def require_student_role(role: Role, agents: Sequence[str]) -> None:
    if role != "student":
        raise ValueError(f"augmentation agents {list(agents)} are for the student; the {role} trains without them")


def train_network(
    cfg: TrainingConfig,
    prep: Prepared,
    role: Role,
    out_dir: str | Path | None,
    *,
    data: Dataset | None = None,
    schedule: Any = None,
    teacher: TeacherHandle | None = None,
    distill: bool = True,
    agents: Sequence[str] = (),
    epochs: int | None = None,
    crop_padding: int | None = None,
    cutout: int | None = None,
    resume: bool = False,
    callback=None,
    seed: int | None = None,
) -> FitResult:
    """Train the configured network for ``role`` on ``data`` (default: the full split), evaluating
    each epoch on ``data.test`` (the validation split for the reduced data). ``epochs`` (default the role's
    ``train.epochs``) is the caller's answer, passed down to the Trainer, never derived again."""
    data = data or prep.full
    seed = cfg.seed if seed is None else seed
    parts = build_role_trainer(cfg, role, data, prep.normalizer, prep.device, schedule=schedule, teacher=teacher,
                               distill=distill, agents=agents, epochs=epochs, crop_padding=crop_padding,
                               cutout=cutout, seed=seed)
    resuming = resume and out_dir is not None and (Path(out_dir) / "last.pt").is_file()
    check_objective(parts.objective, data, prep.normalizer)
    if not resuming:  # a resumed run restores the objective's state from its checkpoint
        initialize_objective(parts.objective, cfg, data, prep, seed, parts.trainer.num_epochs)
    return fit(parts.trainer, out_dir, parts.meta, resume=resume, callback=callback,
               eval_batch_size=cfg.data.eval_batch_size, eval_every=cfg.network(role).train.eval_every)
