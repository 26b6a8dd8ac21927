"""Feature-map compression by truncated SVD, shared by KD-SVD (Lee et al. 2018) and MHGD (Lee & Song 2019).

A tapped map ``(N, C, H, W)`` is read as N matrices X of shape ``(HW, C)``; its knowledge is the top
right-singular vectors (C-dimensional). As in both papers' code (reference §B5) the teacher keeps
K = 1 vector and the student K = 4, and the student vector that best matches the teacher's
(largest |cos|) is picked and sign-corrected, because the SVD fixes neither order nor sign.

The vectors come from ``eigh`` of the smaller Gram matrix (X^T X or X X^T), batched on the device
that holds the features; role-kd sent every SVD to the CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

TEACHER_K = 1
STUDENT_K = 4
# eigen-gaps below this fraction of the largest eigenvalue are float32 noise: their (unbounded)
# eigenvector-gradient terms are dropped instead of turning into inf/NaN (dead ReLU channels give
# exactly repeated zero eigenvalues).
_GAP_TOL = 1e-6


@dataclass
class TapPair:
    """A tap's compressed knowledge: the sign-aligned student vector and the teacher's, ``(N, C)`` each."""

    student: Tensor
    teacher: Tensor


class _TopEigh(torch.autograd.Function):
    """Top-k eigenpairs (descending) of symmetric PSD matrices, with a backward that stays finite.

    Backward: dA = sum_j gλ_j v_j v_j^T + sum_{i != j} v_i (v_i^T g_j) v_j^T / (λ_j - λ_i) over the
    k kept pairs j and all pairs i, skipping numerically degenerate (i, j).
    """

    @staticmethod
    def forward(ctx, gram: Tensor, k: int) -> tuple[Tensor, Tensor]:
        evals, evecs = torch.linalg.eigh(gram)
        ctx.save_for_backward(evals, evecs)
        ctx.k = k
        return evals[..., -k:].flip(-1), evecs[..., -k:].flip(-1)

    @staticmethod
    def backward(ctx, g_vals: Tensor | None, g_vecs: Tensor | None) -> tuple[Tensor, None]:
        evals, evecs = ctx.saved_tensors
        top_vals, top_vecs = evals[..., -ctx.k :].flip(-1), evecs[..., -ctx.k :].flip(-1)
        grad = torch.zeros_like(evecs)
        if g_vecs is not None:
            gap = top_vals.unsqueeze(-2) - evals.unsqueeze(-1)  # (.., n, k): λ_j - λ_i
            tol = _GAP_TOL * evals.abs().amax(-1, keepdim=True).unsqueeze(-1)
            inv_gap = torch.where(gap.abs() > tol, 1.0 / torch.where(gap == 0, 1.0, gap), 0.0)
            grad = evecs @ ((evecs.mT @ g_vecs) * inv_gap) @ top_vecs.mT
        if g_vals is not None:
            grad = grad + (top_vecs * g_vals.unsqueeze(-2)) @ top_vecs.mT
        return (grad + grad.mT) / 2, None


def top_right_singular_vectors(x: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The top-k right-singular vectors ``(N, C, k)`` and singular values ``(N, k)`` of each sample's
    ``(HW, C)`` map (``k`` is capped at the rank bound min(HW, C)). Signs are arbitrary."""
    with torch.autocast(x.device.type, enabled=False):
        f = x.float().reshape(x.shape[0], x.shape[1], -1)  # (N, C, HW) = X^T
        channels, positions = f.shape[1], f.shape[2]
        k = min(k, channels, positions)
        if channels <= positions:
            evals, v = _TopEigh.apply(f @ f.mT, k)  # eigenvectors of X^T X are V
        else:
            evals, u = _TopEigh.apply(f.mT @ f, k)  # X X^T gives U; V = X^T U / sigma
            v = F.normalize(f @ u, dim=1)
        return v, evals.clamp_min(0).sqrt()


def _sign(x: Tensor) -> Tensor:
    return torch.where(x >= 0, 1.0, -1.0).to(x.dtype)


def _fix_sign(v: Tensor) -> Tensor:
    """Make each ``(N, C)`` vector's entries sum positive: a post-ReLU map is non-negative, so its top
    singular vector is too (Perron-Frobenius) and this picks the natural sign."""
    return v * _sign(v.sum(dim=1, keepdim=True))


def align(student_v: Tensor, teacher_v: Tensor) -> TapPair:
    """Pair student vectors ``(N, C, ks)`` with the teacher's top vector ``(N, C, 1)``.

    The teacher's sign is fixed first (:func:`_fix_sign`); the student vector with the largest |cos|
    to it is picked and flipped to agree. Hence neither SVD's sign choice changes the result.
    """
    teacher = _fix_sign(teacher_v[..., 0])
    cos = (student_v * teacher.unsqueeze(-1)).sum(dim=1)  # (N, ks)
    best = cos.abs().argmax(dim=1, keepdim=True)  # (N, 1)
    picked = student_v.gather(2, best.unsqueeze(1).expand(-1, student_v.shape[1], -1))[..., 0]
    return TapPair(picked * _sign(cos.gather(1, best)), teacher)


def teacher_vectors(features: list[Tensor]) -> list[Tensor]:
    """The teacher's sign-fixed top vector ``(N, C)`` per tap (MHGD's initialisation phase)."""
    return [_fix_sign(top_right_singular_vectors(f, TEACHER_K)[0][..., 0]) for f in features]


def compress_taps(student: list[Tensor], teacher: list[Tensor]) -> list[TapPair]:
    """Compress and align every tap; the teacher side carries no gradient."""
    pairs = []
    for fs, ft in zip(student, teacher):
        with torch.no_grad():
            vt = top_right_singular_vectors(ft, TEACHER_K)[0]
        pairs.append(align(top_right_singular_vectors(fs, STUDENT_K)[0], vt))
    return pairs
