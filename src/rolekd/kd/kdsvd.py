"""KD via SVD (Lee et al. 2018): the student matches RBF relations between the compressed
features of consecutive taps.

Each tap is compressed to its top right-singular vector (:mod:`.svd`); for taps l-1 and l the
relation is ``exp(-(v_l[i] - v_{l-1}[j])^2 / 8)`` over all channel pairs (i, j), and the loss is
its squared error SUMMED over the batch, the channel pairs and the consecutive-tap pairs, with no
division by the batch size: role-kd's (and Lee et al.'s) ``tf.reduce_sum((S_rbf - stop_grad(T_rbf))**2)``
added over tap pairs. The scale matters because the KD gradient is clipped per tensor to the task
gradient's norm (:mod:`.clip`): it decides how much of the clip budget this term takes, and averaged
over the batch it was a few thousandths of the task gradient, i.e. it barely reached the update.
It ties the loss scale to the batch size, as in the original (128 there).

role-kd also multiplies both V's by the teacher's L2-normalised singular values; with the teacher's
K = 1 that is a single normalised value, 1, so it is omitted here (a no-op). Its ``removenan`` on
the squared errors has no counterpart: :mod:`.svd`'s backward stays finite instead.
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
        return torch.stack(losses).sum()  # summed over the batch too (the original's reduction)
