"""II-KD, the paper's combined objective (Eq. 9): L_task + lambda * (L_intra + L_inter) with
intra = RKD and inter = MHGD + KD-SVD, added with equal coefficients; lambda = 0.4 and KD
gradient clipping by default (§5.2). MHGD and KD-SVD share one SVD compression per tap.

Reductions are role-kd's: RKD's terms are Huber means over pairs and triplets, MHGD's and KD-SVD's
sums over the batch (see their modules). Under the per-tensor clip the four terms share one budget
in proportion to their gradients; at batch 128 MHGD's sum takes nearly all of it, as in the original
(benchmarks/README.md, "KD gradient ratios").
"""

from __future__ import annotations

from typing import Any, Mapping

from torch import Tensor

from .base import KDMethod, Outputs, require
from .kdsvd import KDSVD
from .mhgd import MHGD
from .rkd import RKD
from .svd import compress_taps


class IIKD(KDMethod):
    name = "iikd"
    taps = "all"
    needs_init = True
    default_lam = 0.4
    default_clip = True

    def __init__(
        self,
        rkd_embedding: str = "pooled",
        rkd_distance_weight: float = 25.0,
        rkd_angle_weight: float = 50.0,
        rkd_normalize: bool = False,
        mhgd_heads: int = 4,
        mhgd_fit_lr: float = 0.1,
    ) -> None:
        """Flat options (config options are scalars): each part's option under its prefix."""
        super().__init__()
        self.rkd = RKD(rkd_embedding, rkd_distance_weight, rkd_angle_weight, rkd_normalize)
        self.mhgd = MHGD(mhgd_heads, mhgd_fit_lr)
        self.kdsvd = KDSVD()

    @property
    def initialized(self) -> bool:
        return self.mhgd.initialized

    def skip_initialization(self) -> None:
        self.mhgd.skip_initialization()

    def check(self, student: Outputs, teacher: Outputs) -> None:
        for part in (self.rkd, self.mhgd, self.kdsvd):
            part.check(student, teacher)

    def fit_step(self, teacher: Outputs) -> float:
        return self.mhgd.fit_step(teacher)

    def forward(self, student: Outputs, teacher: Outputs, target: Tensor) -> dict[str, Tensor]:
        pairs = compress_taps(student.features, teacher.features)
        return {
            **self.rkd(student, teacher, target),
            "mhgd": self.mhgd.graph_loss(pairs),
            "kdsvd": self.kdsvd.relation_loss(pairs),
        }

    def checkpoint_state(self) -> dict[str, Any]:
        return {"mhgd": self.mhgd.checkpoint_state()}

    def load_checkpoint_state(self, state: Mapping[str, Any]) -> None:
        require(set(state) == {"mhgd"}, f"iikd checkpoint state must hold 'mhgd' only, got {sorted(state)}")
        self.mhgd.load_checkpoint_state(state["mhgd"])
