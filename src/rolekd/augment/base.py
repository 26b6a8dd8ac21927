"""The augmenter interface shared by schedule policies, baseline ops and adversarial agents.

The training loop knows only this protocol: an augmenter takes a :class:`Batch` and an
:class:`AugmentContext` and returns a (possibly larger) batch. Pixel-space augmenters work on
uint8 images before normalisation; input-space augmenters (e.g. backward-pass samples) work on
normalised float images after it. The loop runs the two groups in that order.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol, runtime_checkable

import torch
from torch import nn


@dataclass
class Batch:
    """A training batch on the device.

    ``images`` is uint8 ``(N, C, H, W)`` in pixel space or float in input (normalised) space.
    ``hard_mask`` (bool ``(N,)``) marks samples supervised by the ground-truth label; samples with
    ``False`` (e.g. generated adversarial samples) are supervised by the teacher's soft labels only.
    ``None`` means every sample has a valid hard label.
    """

    images: torch.Tensor
    labels: torch.Tensor
    hard_mask: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def with_images(self, images: torch.Tensor) -> "Batch":
        return replace(self, images=images)


@dataclass
class AugmentContext:
    """What an augmenter may need besides the batch.

    ``fill`` is the per-channel uint8 fill value (the dataset mean), as PBA fills empty pixels.
    ``models`` maps role names ("student", "teacher") to modules for agents that need them.
    ``normalize`` maps uint8 pixels to model input space (agents that generate in input space).
    """

    epoch: int
    num_epochs: int
    generator: torch.Generator
    fill: tuple[int, ...] = (0, 0, 0)
    step: int = 0
    models: dict[str, nn.Module] = field(default_factory=dict)
    normalize: Any = None
    extras: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Augmenter(Protocol):
    """``space`` says where the augmenter acts: ``"pixel"`` (uint8) or ``"input"`` (normalised float)."""

    space: Literal["pixel", "input"]

    def __call__(self, batch: Batch, ctx: AugmentContext) -> Batch: ...

