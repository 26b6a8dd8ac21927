"""What every KD method shares: the outputs it reads and the small interface it implements.

A method is a pure loss: it gets the student's and the teacher's logits and tapped features and
returns named, unweighted-by-lambda loss terms. Everything around it (running the networks, the
frozen teacher, lambda, clipping, checkpoints) belongs to :class:`~rolekd.kd.distiller.Distiller`.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Mapping

from torch import Tensor, nn


@dataclass
class Outputs:
    """One network's view of a batch: logits ``(N, classes)`` and tapped features in tap order."""

    logits: Tensor
    features: list[Tensor] = field(default_factory=list)


class KDMethod(nn.Module):
    """Base class of a KD loss.

    Class attributes describe what the method needs, so the distiller can provide it:
    ``taps`` (which feature taps: none, the last one, or all), ``trains_teacher`` (the teacher is a
    peer that learns too, as in DML), ``needs_init`` (a phase on teacher features before
    distillation, as in MHGD), and the paper's defaults for lambda and KD gradient clipping.
    """

    name: ClassVar[str] = ""
    taps: Literal["none", "last", "all"] = "none"
    trains_teacher: bool = False
    needs_init: ClassVar[bool] = False
    default_lam: ClassVar[float] = 1.0
    default_clip: ClassVar[bool] = False

    @classmethod
    def option_defaults(cls) -> dict[str, Any]:
        """The options a config may set (``distill.options``), with their defaults: the constructor's parameters."""
        params = inspect.signature(cls).parameters.values()
        return {p.name: p.default for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}

    def forward(self, student: Outputs, teacher: Outputs, target: Tensor) -> dict[str, Tensor]:  # pragma: no cover
        """Loss terms over all samples; ``target`` is the class per sample (the teacher's argmax
        where no ground-truth label is valid)."""
        raise NotImplementedError

    def check(self, student: Outputs, teacher: Outputs) -> None:
        """Raise a one-line ``ValueError`` if the two networks' outputs cannot be related."""

    def on_epoch_start(self, epoch: int, num_epochs: int) -> None:
        """Hook for method-internal schedules (e.g. DKD's warm-up)."""

    def fit_step(self, teacher: Outputs) -> float:  # pragma: no cover - only for needs_init methods
        """One optimisation step of the method's own network on teacher features; returns its loss."""
        raise NotImplementedError

    @property
    def initialized(self) -> bool:
        return True

    def skip_initialization(self) -> None:  # pragma: no cover - only for needs_init methods
        """Distil without the initialisation phase (its network stays at random initialisation)."""
        raise NotImplementedError

    def checkpoint_state(self) -> dict[str, Any]:
        return dict(self.state_dict())

    def load_checkpoint_state(self, state: Mapping[str, Any]) -> None:
        try:
            self.load_state_dict(dict(state))
        except RuntimeError as exc:
            raise ValueError(f"checkpoint state does not fit distill method {self.name!r}: {_first_line(exc)}") from exc


def build_method(cls: type[KDMethod], options: Mapping[str, Any]) -> KDMethod:
    """Instantiate ``cls`` from config options; an unknown key is a one-line error naming the accepted ones."""
    accepted = list(cls.option_defaults())
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join(unknown)} for distill method {cls.name!r}; "
            f"accepted: {', '.join(accepted) or 'none'}"
        )
    try:
        return cls(**options)
    except (TypeError, ValueError) as exc:
        message = f"distill method {cls.name!r} rejected its options {dict(options)}: {_first_line(exc)}"
        raise ValueError(message) from exc


def require(condition: bool, message: str) -> None:
    """Raise ``ValueError(message)`` unless ``condition``: option and shape validation in one line."""
    if not condition:
        raise ValueError(message)


def channels(features: list[Tensor]) -> list[int]:
    return [int(f.shape[1]) for f in features]


def require_matching_taps(method: str, student: Outputs, teacher: Outputs, minimum: int) -> None:
    """Relation-between-taps methods compare per-tap matrices, so tap counts and channels must agree."""
    require(
        len(student.features) == len(teacher.features) >= minimum,
        f"{method} needs the same number (>= {minimum}) of student and teacher taps; "
        f"got {len(student.features)} student and {len(teacher.features)} teacher taps",
    )
    require(
        channels(student.features) == channels(teacher.features),
        f"{method} needs equal channel counts at each tap; student {channels(student.features)}, "
        f"teacher {channels(teacher.features)}",
    )


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
