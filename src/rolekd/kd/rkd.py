"""Relational KD (Park et al. 2019): the student matches the teacher's pairwise distances and
triplet angles over the batch, each compared with a Huber loss.

Defaults are RKD's (distance 25, angle 50, on the penultimate embedding: the globally pooled last
tap). role-kd used L2-normalised logits with weights 50/100: ``embedding="logits", normalize=True,
distance_weight=50, angle_weight=100``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import KDMethod, Outputs, require

_EMBEDDINGS = ("pooled", "logits")


def distance_potential(e: Tensor) -> Tensor:
    """Pairwise Euclidean distances divided by their mean over distinct pairs (scale-free)."""
    sq = e.pow(2).sum(dim=1)
    d = (sq.unsqueeze(0) + sq.unsqueeze(1) - 2 * e @ e.T).clamp_min(1e-12).sqrt()
    off_diagonal = 1 - torch.eye(len(e), device=e.device, dtype=e.dtype)
    d = d * off_diagonal
    return d / (d.sum() / off_diagonal.sum().clamp_min(1)).clamp_min(1e-12)


def angle_potential(e: Tensor) -> Tensor:
    """cos of the angle at j in every triplet (i, j, k): <(e_i - e_j)/|.|, (e_k - e_j)/|.|>."""
    diff = F.normalize(e.unsqueeze(0) - e.unsqueeze(1), dim=2)  # diff[j, i] = e_i - e_j
    return diff @ diff.transpose(1, 2)


class RKD(KDMethod):
    name = "rkd"

    def __init__(
        self,
        embedding: str = "pooled",
        distance_weight: float = 25.0,
        angle_weight: float = 50.0,
        normalize: bool = False,
    ) -> None:
        super().__init__()
        require(embedding in _EMBEDDINGS, f"rkd: embedding must be one of {', '.join(_EMBEDDINGS)}, got {embedding!r}")
        require(distance_weight >= 0 and angle_weight >= 0, "rkd: distance_weight and angle_weight must be >= 0")
        self.embedding, self.normalize = embedding, normalize
        self.distance_weight, self.angle_weight = float(distance_weight), float(angle_weight)
        self.taps = "last" if embedding == "pooled" else "none"

    def embed(self, out: Outputs) -> Tensor:
        e = out.logits if self.embedding == "logits" else out.features[-1]
        e = e.float().flatten(2).mean(dim=2) if e.dim() > 2 else e.float()
        return F.normalize(e, dim=1) if self.normalize else e

    def check(self, student: Outputs, teacher: Outputs) -> None:
        n = len(student.logits)
        require(n > 2, f"rkd relates samples of a batch: it needs > 2 per batch, got {n}")

    def forward(self, student: Outputs, teacher: Outputs, target: Tensor) -> dict[str, Tensor]:
        with torch.autocast(student.logits.device.type, enabled=False):  # |a|^2+|b|^2-2ab cancels in bf16
            return self._terms(self.embed(student), self.embed(teacher).detach())

    def _terms(self, s: Tensor, t: Tensor) -> dict[str, Tensor]:
        terms = {}
        if self.distance_weight:
            distance = F.smooth_l1_loss(distance_potential(s), distance_potential(t))
            terms["rkd_distance"] = self.distance_weight * distance
        if self.angle_weight:
            terms["rkd_angle"] = self.angle_weight * F.smooth_l1_loss(angle_potential(s), angle_potential(t))
        return terms
