"""Knowledge-distillation objectives: soft labels, DML, RKD, MHGD, KD-SVD, the paper's II-KD, DKD.

Build one with :func:`build_objective`; it returns an :class:`~rolekd.training.objective.Objective`
for the training loop (a :class:`Distiller` for every method but ``"none"``).
"""

from .base import KDMethod, Outputs
from .distiller import Distiller
from .registry import (
    DistillSettings,
    available_methods,
    build_objective,
    distills,
    initialization_epochs,
    register_method,
    resolve_settings,
)
from .schedule import LambdaSchedule

__all__ = [
    "DistillSettings",
    "Distiller",
    "KDMethod",
    "LambdaSchedule",
    "Outputs",
    "available_methods",
    "build_objective",
    "distills",
    "initialization_epochs",
    "register_method",
    "resolve_settings",
]
