"""Augmenters with a role: schedule-driven policies and adversarial agents that read teacher and student.

The agents (backward-pass samples, HARD learned transformations) implement the same
:class:`~rolekd.augment.base.Augmenter` interface as a schedule policy, take both networks from the
augment context, and stack after the policy in the student's training.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from ..augment.base import Augmenter
from ..registry import Registry
from .backward import BackwardPassAgent
from .hard import Augmentor, HardAgent, SpatialAugmentor, available_augmentors, build_augmentor, register_augmentor
from .policy import PolicyAugmenter
from .preview import agent_preview, restore_from_checkpoint

if TYPE_CHECKING:
    from ..config import TrainingConfig


@dataclass(frozen=True)
class AgentSpec:
    """How to build an agent from the whole config (its settings live in ``agents.<name>``), and what the
    report calls the row trained with it."""

    build: Callable[["TrainingConfig"], Augmenter]
    label: str


AGENTS: Registry[AgentSpec] = Registry("augmentation agent")
AGENTS.add("backward", AgentSpec(lambda cfg: BackwardPassAgent(cfg.agents.backward), "backward-pass samples"))
AGENTS.add("hard", AgentSpec(lambda cfg: HardAgent.from_config(cfg.agents.hard), "HARD"))


def register_agent(name: str, spec: AgentSpec) -> AgentSpec:
    """Add a user's agent (e.g. from an ``--import`` module); ``student.agents`` may then name it."""
    return AGENTS.add(name, spec)


def available_agents() -> list[str]:
    return AGENTS.names()


def agent_label(name: str) -> str:
    return AGENTS.get(name, "student.agents").label


def build_agents(names: list[str], cfg: "TrainingConfig") -> list[Augmenter]:
    """The agents named in ``student.agents``, in that order, configured from ``cfg.agents``."""
    return [AGENTS.get(name, "student.agents").build(cfg) for name in names]


__all__ = [
    "AgentSpec",
    "Augmentor",
    "BackwardPassAgent",
    "HardAgent",
    "PolicyAugmenter",
    "SpatialAugmentor",
    "agent_label",
    "agent_preview",
    "available_agents",
    "available_augmentors",
    "build_agents",
    "build_augmentor",
    "register_agent",
    "register_augmentor",
    "restore_from_checkpoint",
]
