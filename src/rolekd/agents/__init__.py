"""Augmenters with a role: schedule-driven policies and adversarial agents that read teacher and student.

The agents (backward-pass samples, HARD learned transformations) implement the same
:class:`~rolekd.augment.base.Augmenter` interface as a schedule policy, take both networks from the
augment context, and stack after the policy in the student's training.
"""

from __future__ import annotations

from typing import Callable

from ..augment.base import Augmenter
from ..config import ExperimentConfig
from .backward import BackwardPassAgent
from .hard import Augmentor, HardAgent, SpatialAugmentor, available_augmentors, build_augmentor, register_augmentor
from .policy import PolicyAugmenter
from .preview import agent_preview, restore_from_checkpoint

_AGENTS: dict[str, Callable[[ExperimentConfig], Augmenter]] = {
    "backward": lambda cfg: BackwardPassAgent.from_config(cfg.agents.backward),
    "hard": lambda cfg: HardAgent.from_config(cfg.agents.hard),
}


def build_agents(names: list[str], cfg: ExperimentConfig) -> list[Augmenter]:
    """The agents named in ``student.agents``, in that order, configured from ``cfg.agents``."""
    return [_AGENTS[name](cfg) for name in names]


__all__ = [
    "Augmentor",
    "BackwardPassAgent",
    "HardAgent",
    "PolicyAugmenter",
    "SpatialAugmentor",
    "agent_preview",
    "available_augmentors",
    "build_agents",
    "build_augmentor",
    "register_augmentor",
    "restore_from_checkpoint",
]
