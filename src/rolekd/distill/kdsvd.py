"""KD via SVD (Lee et al. 2018): the student matches RBF relations between the compressed
features of consecutive taps.

Each tap is compressed to its top right-singular vector (:mod:`.svd`); for taps l-1 and l the
relation is ``exp(-(v_l[i] - v_{l-1}[j])^2 / 8)`` over all channel pairs (i, j), and the loss is
its squared error summed over pairs and taps, averaged over the batch (the original sums over the
batch too, which ties the loss scale to the batch size).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .base import KDMethod, Outputs, require_matching_taps
from .svd import TapPair, compress_taps


def rbf_relation(current: Tensor, previous: Tensor) -> Tensor:
    """``(N, C_l, C_{l-1})`` Gaussian kernel between the entries of two taps' vectors."""
    return torch.exp(-(current.unsqueeze(2) - previous.unsqueeze(1)).pow(2) / 8)


class KDSVD(KDMethod):
    name = "kdsvd"
    taps = "all"
    default_clip = True  # the KD-SVD code always clips (reference §B6)

    def check(self, student: Outputs, teacher: Outputs) -> None:
        require_matching_taps(self.name, student, teacher, minimum=2)

    def forward(self, student: Outputs, teacher: Outputs, target: Tensor) -> dict[str, Tensor]:
        return {"kdsvd": self.relation_loss(compress_taps(student.features, teacher.features))}

    @staticmethod
    def relation_loss(pairs: list[TapPair]) -> Tensor:
        losses = [
            (rbf_relation(cur.student, prev.student) - rbf_relation(cur.teacher, prev.teacher)).pow(2).sum()
            for prev, cur in zip(pairs, pairs[1:])
        ]
        return torch.stack(losses).sum() / len(pairs[0].student)
