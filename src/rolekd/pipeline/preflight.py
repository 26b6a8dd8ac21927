"""The pre-flight: before any training, build every network a command will train and run one batch through each
one's augmenters, objective and backward pass, so that a run that would fail after an hour fails in seconds.

It catches what only shows when networks meet: taps a model cannot give, teacher and student that a method cannot
relate (tap counts, channels), an agent that needs a teacher, a policy op that fails on the data. Each failure is one
line naming the training it concerns, both networks, and the config key to change.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Iterable

import torch

from ..augment.policy import Policy
from ..config import ExperimentConfig
from ..data import Dataset, ImageSet
from ..training import describe_network
from .networks import network_meta
from .setup import Prepared
from .stages import Role, TeacherHandle, build_role_trainer, check_objective

PREFLIGHT_IMAGES = 8  # per batch: enough for batch statistics and RKD's angles, cheap for any network


class PreflightError(ValueError):
    """A training of the command cannot run; says which, with which networks, and what to change."""


@dataclass(frozen=True)
class Training:
    """One kind of training a command will run: its role, whether it distils (or is only warm-started from the
    teacher), its agents, and whether a learned policy runs before the baseline augmentation."""

    label: str = field(compare=False)  # trainings alike but for their label are checked once
    role: Role
    kd: bool = False
    warm_start: bool = False
    agents: tuple[str, ...] = ()
    scheduled: bool = False

    @property
    def needs_teacher(self) -> bool:
        return self.kd or self.warm_start


def validate_names(cfg: ExperimentConfig) -> None:
    """Names that code registers above the config's floor (models, the KD method and its per-method settings,
    agents) are checked here, before data loads: a typo costs seconds, not a data set's loading."""
    from ..agents import available_agents
    from ..kd import available_methods, resolve_settings
    from ..models import available_models

    _require_registered("teacher.model", "model", cfg.teacher.model, available_models())
    _require_registered("student.model", "model", cfg.student.model, available_models())
    _require_registered("distill.method", "distill method", cfg.distill.method, available_methods())
    resolve_settings(cfg.distill)  # per_method names and settings
    for name in cfg.student.agents:
        _require_registered("student.agents", "augmentation agent", name, available_agents())


def _require_registered(key: str, kind: str, name: str, names: list[str]) -> None:
    if name not in names:
        raise ValueError(f"{key}: unknown {kind} {name!r}; expected one of: {', '.join(names)}")


def preflight(cfg: ExperimentConfig, prep: Prepared, trainings: Iterable[Training],
              teacher: TeacherHandle | None = None, say: Callable[[str], None] | None = None) -> int:
    """Build and step each distinct training once on a few training images; returns how many were checked.

    ``teacher`` is the trained teacher when the command has one (``distill``, a student search); otherwise an
    untrained network of the configured teacher stands in (``rolekd run``: only its architecture matters here).
    """
    kinds = list(dict.fromkeys(trainings))
    tiny = _first_images(prep.full, PREFLIGHT_IMAGES)
    stand_in = teacher
    if stand_in is None and any(t.needs_teacher for t in kinds):
        stand_in = _untrained_teacher(cfg, prep)
    inferred: dict[str, str] = {}
    for t in kinds:
        try:
            model = _step_once(cfg, prep, tiny, t, stand_in if t.needs_teacher else None)
        except PreflightError:
            raise
        except (ValueError, RuntimeError, KeyError, TypeError) as exc:
            raise PreflightError(_explain(cfg, t, stand_in, exc)) from exc
        if t.kd:
            inferred.update(_inferred(cfg, "student", model))
            inferred.update(_inferred(cfg, "teacher", stand_in.model))
    if say is not None:
        if len(kinds) > 1:  # a single training says nothing: its first step follows at once
            say(f"pre-flight: {len(kinds)} kinds of training built and stepped once on {len(tiny.train)} images")
        for note in inferred.values():
            say(note)
    return len(kinds)


def _inferred(cfg: ExperimentConfig, role: Role, model: torch.nn.Module) -> dict[str, str]:
    """A note for a network whose taps rolekd inferred (registered without them, none configured)."""
    from ..models.registry import inferred_taps

    configured = cfg.network(role).taps
    if configured is not None or hasattr(model, "default_taps"):
        return {}
    taps, how = inferred_taps(model)
    return {role: f"{role}.taps inferred from {how}: {taps} (set {role}.taps to choose others)"} if taps else {}


def _step_once(cfg: ExperimentConfig, prep: Prepared, data: Dataset, t: Training,
               teacher: TeacherHandle | None) -> torch.nn.Module:
    schedule = Policy.random(torch.Generator().manual_seed(cfg.seed)) if t.scheduled else None
    parts = build_role_trainer(cfg, t.role, data, prep.normalizer, prep.device, schedule=schedule, teacher=teacher,
                               distill=t.kd, agents=t.agents, seed=cfg.seed)
    check_objective(parts.objective, data, prep.normalizer)
    if getattr(parts.objective, "needs_initialization", False):
        parts.objective.skip_initialization()  # a throwaway objective: its real initialisation runs in training
    parts.trainer.check_step()
    return parts.trainer.model


def _first_images(ds: Dataset, n: int) -> Dataset:
    idx = torch.arange(min(n, len(ds.train)), device=ds.train.device)
    train = ImageSet(ds.train.images[idx], ds.train.labels[idx])
    return Dataset(ds.name, train, train, ds.num_classes, ds.classes)


def _untrained_teacher(cfg: ExperimentConfig, prep: Prepared) -> TeacherHandle:
    from ..quant import build_network

    meta = network_meta(cfg.teacher, prep.full.num_classes, prep.full.image_shape, "teacher")
    model = build_network(meta).to(prep.device).eval().requires_grad_(False)
    return TeacherHandle(model, meta, "(pre-flight: an untrained teacher of the configured architecture)")


def _explain(cfg: ExperimentConfig, t: Training, teacher: TeacherHandle | None, exc: BaseException) -> str:
    reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    net = cfg.network(t.role)
    meta = {"model": net.model, "model_args": dict(net.model_args), "num_classes": 0,
            "w_bits": getattr(net, "w_bits", 32), "a_bits": getattr(net, "a_bits", 32)}
    nets = f"{t.role} {_network(meta)}"
    if t.needs_teacher and teacher is not None:
        nets = f"teacher {_network(teacher.meta)} -> {nets}"
    hint = ""
    if ("tap" in reason or "channel" in reason) and ".taps" not in reason:
        hint = "; change teacher.taps / student.taps (module paths of each network), the student, or distill.method"
    return f"pre-flight, {t.label} ({nets}): {reason}{hint}"


def _network(meta: dict) -> str:
    """``resnet8 (width=8), W/A 2/2``: the architecture, without the class count."""
    return re.sub(r", \d+ classes", "", describe_network(meta))
