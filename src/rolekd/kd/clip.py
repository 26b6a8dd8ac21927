"""KD gradient clipping as in KD-SVD (Lee et al. 2018) and the paper's II-KD (§5.2).

Per parameter tensor, the distillation gradient is clipped to the task gradient's norm times a
sigmoid warm-up in the epoch: ``g = g_task + clip_by_norm(g_kd, ||g_task|| * sigma(epoch))``.
Per tensor (not global) is what role-kd and the KD-SVD code do. ``g_kd`` already carries lambda,
so lambda shrinks the KD gradient until the clip binds (role-kd applied lambda to the reported
loss only, so it never reached the update).
"""

from __future__ import annotations

import math

from torch import Tensor


def warmup(epoch: float) -> float:
    """sigma(epoch): the KD gradient may reach 50% of the task gradient's norm at epoch 0, 95% by
    epoch 3, and all of it once sigma rounds to 1 (about epoch 18), as in the KD-SVD code."""
    s = 1.0 / (1.0 + math.exp(-epoch))
    return 1.0 if s > 1.0 - 1e-8 else s


def clip_to_task(task_grad: Tensor | None, kd_grad: Tensor | None, scale: float) -> Tensor | None:
    """One tensor's combined gradient. A tensor the task loss does not reach has nothing to be
    bounded by, so its KD gradient passes unclipped."""
    if kd_grad is None or task_grad is None:
        return task_grad if kd_grad is None else kd_grad
    limit = task_grad.norm() * scale
    factor = (limit / kd_grad.norm().clamp_min(1e-12)).clamp(max=1.0)
    return task_grad + kd_grad * factor
