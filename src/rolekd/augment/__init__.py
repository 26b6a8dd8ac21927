"""Augmentation: the augmenter interface, PBA's 15 batched ops, policies and per-epoch schedules.

``plot`` (matplotlib figures) is not imported here; import :mod:`rolekd.augment.plot` directly.
"""

from .base import AugmentContext, Augmenter, Batch
from .ops import GEOMETRIC_OPS, MAX_LEVEL, OP_NAMES, OPS, OpSpec, apply_op, apply_op_sequence
from .policy import (
    COUNT_PROBS,
    MAX_PROB,
    NUM_ENTRIES,
    PBA_ORDER,
    Policy,
    PolicyEntry,
    PolicyError,
    PolicyPlan,
    apply_plan,
    apply_policy,
    load_policy,
    policy_from_json,
    sample_plan,
    save_policy,
)
from .schedule import Schedule, ScheduleError

__all__ = [
    "AugmentContext",
    "Augmenter",
    "Batch",
    "COUNT_PROBS",
    "GEOMETRIC_OPS",
    "MAX_LEVEL",
    "MAX_PROB",
    "NUM_ENTRIES",
    "OPS",
    "OP_NAMES",
    "OpSpec",
    "PBA_ORDER",
    "Policy",
    "PolicyEntry",
    "PolicyError",
    "PolicyPlan",
    "Schedule",
    "ScheduleError",
    "apply_op",
    "apply_op_sequence",
    "apply_plan",
    "apply_policy",
    "load_policy",
    "policy_from_json",
    "sample_plan",
    "save_policy",
]
