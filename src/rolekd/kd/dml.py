"""Deep mutual learning (Zhang et al. 2018): two networks learn from each other's predictions.

The teacher is a peer: each network gets ``CE + lambda * KL(other || self)`` with the other's
prediction as a constant target. Both updates happen in the same optimiser step (the distiller
hands the peer's parameters to the loop as ``extra_parameters``), i.e. the simultaneous variant
rather than the paper's alternating one: one forward of each network per step.
``freeze_peer`` gives the paper's baseline setting, a fixed pre-trained teacher (Table 1).
"""

from __future__ import annotations

from torch import Tensor

from .base import KDMethod, Outputs, require
from .soft import soft_kl


class DML(KDMethod):
    name = "dml"

    def __init__(self, temperature: float = 1.0, freeze_peer: bool = False) -> None:
        super().__init__()
        require(temperature > 0, f"dml: temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)
        self.trains_teacher = not freeze_peer

    def forward(self, student: Outputs, teacher: Outputs, target: Tensor) -> dict[str, Tensor]:
        terms = {"dml": soft_kl(student.logits, teacher.logits.detach(), self.temperature)}
        if self.trains_teacher:
            terms["dml_peer"] = soft_kl(teacher.logits, student.logits.detach(), self.temperature)
        return terms
