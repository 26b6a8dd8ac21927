"""The objective interface: what the one training loop asks of a loss.

An objective runs the model on a batch and returns named loss terms; the loop sums them and
steps the optimiser. Teacher training, KD, a search trial and a HARD run differ only in the
objective (and augmenters) they hand to the loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..augment.base import Batch


@dataclass
class StepContext:
    epoch: int
    num_epochs: int
    step: int = 0
    steps_per_epoch: int = 1

    @property
    def progress(self) -> float:
        """Fractional epoch in [0, num_epochs): epoch + step / steps_per_epoch."""
        return self.epoch + self.step / max(1, self.steps_per_epoch)


@dataclass
class StepOutput:
    """``losses`` are summed and back-propagated; ``logits`` (the trained model's) feed train accuracy;
    ``logs`` are extra scalars recorded in the metrics but not optimised."""

    losses: dict[str, Tensor]
    logits: Tensor
    logs: dict[str, Tensor] = field(default_factory=dict)


class Objective(nn.Module):
    """Base class. Subclasses implement :meth:`forward`.

    Trainable state of the objective itself (e.g. MHGD's attention heads) lives in submodules and
    is returned by :meth:`extra_parameters`; the loop adds it to the optimiser and to checkpoints
    through :meth:`checkpoint_state`. A frozen teacher must not appear in either.
    """

    def forward(self, model: nn.Module, batch: Batch, ctx: StepContext) -> StepOutput:  # pragma: no cover
        raise NotImplementedError

    def on_epoch_start(self, epoch: int, num_epochs: int) -> None:
        """Hook for per-epoch schedules (e.g. lambda decay)."""

    def extra_parameters(self) -> Iterable[nn.Parameter]:
        return []

    def backward(self, out: StepOutput, params: list[Tensor]) -> None:
        """Back-propagate the summed loss; objectives that shape gradients (KD clipping) override."""
        total_loss(out).backward()

    def checkpoint_state(self) -> dict[str, Any]:
        return {}

    def load_checkpoint_state(self, state: dict[str, Any]) -> None:
        if state:
            raise ValueError(f"{type(self).__name__} has no checkpoint state but the checkpoint holds {sorted(state)}")


def total_loss(out: StepOutput) -> Tensor:
    return torch.stack([v for v in out.losses.values()]).sum()


def hard_label_ce(logits: Tensor, batch: Batch, label_smoothing: float = 0.0) -> Tensor:
    """Cross-entropy over the samples that carry a ground-truth label (all, when hard_mask is None)."""
    if batch.hard_mask is None:
        return F.cross_entropy(logits, batch.labels, label_smoothing=label_smoothing)
    mask = batch.hard_mask
    per = F.cross_entropy(logits, batch.labels, reduction="none", label_smoothing=label_smoothing)
    return (per * mask).sum() / mask.sum().clamp_min(1)


class CrossEntropy(Objective):
    """Plain supervised training: the teacher's stage-alpha objective and the no-KD baselines."""

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.label_smoothing = label_smoothing

    def forward(self, model: nn.Module, batch: Batch, ctx: StepContext) -> StepOutput:
        logits = model(batch.images)
        return StepOutput({"ce": hard_label_ce(logits, batch, self.label_smoothing)}, logits)
