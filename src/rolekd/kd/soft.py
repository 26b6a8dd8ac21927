"""Soft labels (Hinton et al. 2014): the student matches the teacher's softened class distribution."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from .base import KDMethod, Outputs, require


def soft_kl(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """KL(softmax(t/T) || softmax(s/T)), batch mean, times T^2 so that the gradient's scale does not
    shrink as 1/T^2 when T grows (Hinton et al. §2; role-kd dropped the factor)."""
    log_s = F.log_softmax(student_logits / temperature, dim=1)
    log_t = F.log_softmax(teacher_logits / temperature, dim=1)
    return F.kl_div(log_s, log_t, reduction="batchmean", log_target=True) * temperature**2


class SoftKD(KDMethod):
    name = "soft"

    def __init__(self, temperature: float = 4.0) -> None:
        super().__init__()
        require(temperature > 0, f"soft: temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)

    def forward(self, student: Outputs, teacher: Outputs, target: Tensor) -> dict[str, Tensor]:
        return {"soft": soft_kl(student.logits, teacher.logits, self.temperature)}
