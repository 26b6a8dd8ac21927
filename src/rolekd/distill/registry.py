"""Method registry and the one builder the CLI/pipeline calls.

:func:`build_objective` takes a config's ``distill`` section as it is::

    distill: {method: iikd, lam: 0.4, lam_decay: 0.5, lam_every: 0.3, clip_grad: true,
              temperature: 4, options: {rkd_embedding: logits}}
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from torch import nn

from ..registry import Registry
from ..train.objective import CrossEntropy, Objective
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

if TYPE_CHECKING:
    from ..config import DistillConfig

_METHODS: Registry[type[KDMethod]] = Registry("distill method")
for _cls in (SoftKD, DML, RKD, MHGD, KDSVD, IIKD, DKD):
    _METHODS.add(_cls.name, _cls)


def register_method(cls: type[KDMethod]) -> type[KDMethod]:
    """Class decorator adding a user's :class:`KDMethod` under its ``name``."""
    require(bool(cls.name) and cls.name != "none", f"a distill method needs a name other than 'none', got {cls.name!r}")
    return _METHODS.add(cls.name, cls)


def available_methods() -> list[str]:
    return ["none", *_METHODS.names()]


_SECTION_DEFAULTS: dict[str, Any] = {
    "lam": None,
    "lam_decay": 0.5,
    "lam_every": 0.3,
    "clip_grad": None,
    "temperature": None,
    "options": None,
}


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
    with its keys: method, lam, lam_decay, lam_every, clip_grad, temperature, options).

    ``method: none`` is plain cross-entropy (no teacher needed). A missing or ``None`` ``lam`` /
    ``clip_grad`` takes the paper's setting for the method (II-KD: 0.4 with clipping; baselines 1.0;
    MHGD and KD-SVD clip as their authors' code does). ``temperature`` applies to the methods that
    have one (soft, dml, dkd) and is ignored by the others. Before training, call
    :meth:`Distiller.check` on a sample, then :meth:`Distiller.initialize` if ``needs_initialization``.
    """
    section = dict(config)
    unknown = sorted(set(section) - {"method", *_SECTION_DEFAULTS})
    require(
        not unknown,
        f"unknown distill setting(s) {', '.join(unknown)}; accepted: method, {', '.join(_SECTION_DEFAULTS)}",
    )
    require("method" in section, f"the distill section needs a method: one of {', '.join(available_methods())}")
    method = section["method"]
    settings = {**_SECTION_DEFAULTS, **{k: v for k, v in section.items() if v is not None}}
    options = dict(settings["options"] or {})
    if method == "none":
        require(not options, f"distill method 'none' takes no options, got {sorted(options)}")
        return CrossEntropy(label_smoothing)
    require(method in _METHODS, f"unknown distill method {method!r}; expected one of: {', '.join(available_methods())}")
    require(teacher is not None, f"distill method {method!r} needs a teacher model")
    cls = _METHODS.get(method)
    if settings["temperature"] is not None and "temperature" in inspect.signature(cls).parameters:
        require(
            "temperature" not in options,
            f"distill temperature is set twice for {method!r}: in the section and in options",
        )
        options["temperature"] = settings["temperature"]
    kd = build_method(cls, options)
    lam = cls.default_lam if settings["lam"] is None else settings["lam"]
    return Distiller(
        teacher,
        student,
        kd,
        schedule=LambdaSchedule(lam, settings["lam_decay"], settings["lam_every"]),
        clip_grad=cls.default_clip if settings["clip_grad"] is None else bool(settings["clip_grad"]),
        student_taps=student_taps,
        teacher_taps=teacher_taps,
        label_smoothing=label_smoothing,
    )
