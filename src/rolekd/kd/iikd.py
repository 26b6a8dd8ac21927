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


_PARTS: dict[str, type[KDMethod]] = {"rkd": RKD, "mhgd": MHGD, "kdsvd": KDSVD}  # option prefix -> part


class IIKD(KDMethod):
    name = "iikd"
    taps = "all"
    needs_init = True
    default_lam = 0.4
    default_clip = True

    def __init__(self, **options: Any) -> None:
        """Flat options (config options are scalars): each part's own option under its prefix, e.g.
        ``rkd_embedding`` or ``mhgd_heads``; the parts keep their own defaults."""
        super().__init__()
        accepted = self.option_defaults()
        unknown = sorted(set(options) - set(accepted))
        require(not unknown, f"iikd: unknown option(s) {', '.join(unknown)}; accepted: {', '.join(accepted)}")
        own = {prefix: {key.removeprefix(f"{prefix}_"): value for key, value in options.items()
                        if key.startswith(f"{prefix}_")} for prefix in _PARTS}
        self.rkd = RKD(**own["rkd"])
        self.mhgd = MHGD(**own["mhgd"])
        self.kdsvd = KDSVD(**own["kdsvd"])

    @classmethod
    def option_defaults(cls) -> dict[str, Any]:
        return {f"{prefix}_{key}": default for prefix, part in _PARTS.items()
                for key, default in part.option_defaults().items()}

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
