"""Method registry and the one builder the CLI/pipeline calls.

:func:`build_objective` takes a config's ``distill`` section as it is::

    distill: {method: iikd, lam_decay: 0.5, lam_every: 0.3,
              per_method: {iikd: {options: {rkd_embedding: logits}}, dml: {options: {freeze_peer: true}}}}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Mapping, Sequence

from torch import nn

from ..config import DistillConfig, MethodSettings
from ..registry import Registry
from ..training.objective import CrossEntropy, Objective
from .base import KDMethod, build_method, require
from .distiller import Distiller
from .dkd import DKD
from .dml import DML
from .iikd import IIKD
from .kdsvd import KDSVD
from .mhgd import MHGD
from .rkd import RKD
from .schedule import LambdaSchedule
from .soft import SoftKD


class NoDistillation(KDMethod):
    """``method: none``: no KD term; the student trains on labels alone (cross-entropy), no teacher needed."""

    name = "none"
    distills: ClassVar[bool] = False


_METHODS: Registry[type[KDMethod]] = Registry("distill method")
for _cls in (NoDistillation, SoftKD, DML, RKD, MHGD, KDSVD, IIKD, DKD):
    _METHODS.add(_cls.name, _cls)


def register_method(cls: type[KDMethod]) -> type[KDMethod]:
    """Class decorator adding a user's :class:`KDMethod` under its ``name``."""
    require(bool(cls.name), f"a distill method needs a name, got {cls.name!r}")
    return _METHODS.add(cls.name, cls)


def available_methods() -> list[str]:
    """Registered method names, ``none`` (no KD) first."""
    return sorted(_METHODS.names(), key=lambda name: (name != NoDistillation.name, name))


def distills(method: str) -> bool:
    """Whether ``method`` adds a KD term (every registered method but ``none``)."""
    return getattr(_METHODS.get(method, "distill.method"), "distills", True)


_SETTINGS = tuple(MethodSettings.model_fields)  # per method; a method's own defaults apply where unset
_SECTION_KEYS = tuple(DistillConfig.model_fields)  # a mapping passed for a distill section takes these keys


@dataclass(frozen=True)
class DistillSettings:
    """A ``distill`` section resolved for its method: what the objective is built with."""

    method: str
    lam: float
    clip_grad: bool
    temperature: float | None  # None: the method has no temperature
    options: dict[str, Any]
    schedule: LambdaSchedule

    def describe(self) -> str:
        t = "" if self.temperature is None else f", T = {self.temperature:g}"
        opts = "".join(f", {k} = {v}" for k, v in sorted(self.options.items()) if k != "temperature")
        return f"{self.method}: lambda = {self.lam:g}, KD-gradient clipping {'on' if self.clip_grad else 'off'}{t}{opts}"


def _plain(value: Any) -> Any:
    return value.model_dump() if hasattr(value, "model_dump") else value


def resolve_settings(config: DistillConfig | Mapping[str, Any]) -> DistillSettings | None:
    """The settings a ``distill`` section means for its method; ``None`` for ``method: none``.

    Precedence, lowest first: the method's own default (its class: lambda, clipping, temperature),
    the section's value where the user set one, then ``per_method[method]`` (so one config can name
    the paper's setting of every method and ``--set distill.method=...`` picks the right one).
    """
    section = {k: _plain(v) for k, v in dict(config).items()}
    unknown = sorted(set(section) - set(_SECTION_KEYS))
    require(not unknown, f"unknown distill setting(s) {', '.join(unknown)}; accepted: {', '.join(_SECTION_KEYS)}")
    require("method" in section, f"the distill section needs a method: one of {', '.join(available_methods())}")
    method = section["method"]
    per_method = {k: _plain(v) or {} for k, v in (section.get("per_method") or {}).items()}
    strange = sorted(set(per_method) - set(available_methods()))
    require(not strange, f"distill.per_method: unknown method(s) {', '.join(strange)}; "
            f"expected names from: {', '.join(available_methods())}")
    own = per_method.get(method, {})
    bad = sorted(set(own) - set(_SETTINGS))
    require(not bad, f"distill.per_method.{method}: unknown setting(s) {', '.join(bad)}; accepted: {', '.join(_SETTINGS)}")
    value = {k: own.get(k) if own.get(k) is not None else section.get(k) for k in _SETTINGS}
    options = {**dict(section.get("options") or {}), **dict(own.get("options") or {})}
    require(method in _METHODS, f"unknown distill method {method!r}; expected one of: {', '.join(available_methods())}")
    cls = _METHODS.get(method)
    if not getattr(cls, "distills", True):
        require(not options, f"distill method {method!r} takes no options, got {sorted(options)}")
        return None
    defaults = cls.option_defaults()
    temperature = None
    if "temperature" in defaults:
        if value["temperature"] is not None:
            require(
                "temperature" not in options,
                f"distill temperature is set twice for {method!r}: in the section and in options",
            )
            options["temperature"] = value["temperature"]
        temperature = float(options.get("temperature", defaults["temperature"]))
    fields = DistillConfig.model_fields  # the section's defaults, for a mapping that leaves keys out
    schedule = LambdaSchedule(
        cls.default_lam if value["lam"] is None else value["lam"],
        fields["lam_decay"].default if section.get("lam_decay") is None else section["lam_decay"],
        fields["lam_every"].default if section.get("lam_every") is None else section["lam_every"],
    )
    clip = cls.default_clip if value["clip_grad"] is None else bool(value["clip_grad"])
    return DistillSettings(method, schedule.lam, clip, temperature, options, schedule)


INIT_FRACTION = 40 / 200  # Lee & Song train MHGD's attention network for 40 epochs of a 200-epoch run


def initialization_epochs(setting: int | None, num_epochs: int) -> int:
    """Epochs of a method's initialisation phase (MHGD's attention network): ``setting`` if given,
    else the authors' 40 of 200 scaled to the run (at least 1, so short runs still train it)."""
    return setting if setting is not None else max(1, round(INIT_FRACTION * num_epochs))


def build_objective(
    config: DistillConfig | Mapping[str, Any],
    teacher: nn.Module | None,
    student: nn.Module,
    *,
    student_taps: Sequence[str] | None = None,
    teacher_taps: Sequence[str] | None = None,
    label_smoothing: float = 0.0,
) -> Objective:
    """The training objective for a config's ``distill`` section (a ``DistillConfig`` or a mapping
    with its keys), resolved by :func:`resolve_settings`.

    ``method: none`` is plain cross-entropy (no teacher needed). Before training, call
    :meth:`Distiller.check` on a sample, then :meth:`Distiller.initialize` if ``needs_initialization``.
    """
    settings = resolve_settings(config)
    if settings is None:
        return CrossEntropy(label_smoothing)
    require(teacher is not None, f"distill method {settings.method!r} needs a teacher model")
    kd = build_method(_METHODS.get(settings.method), settings.options)
    return Distiller(
        teacher,
        student,
        kd,
        schedule=settings.schedule,
        clip_grad=settings.clip_grad,
        student_taps=student_taps,
        teacher_taps=teacher_taps,
        label_smoothing=label_smoothing,
    )
