"""Backward-pass samples (after Jafari, Rezagholizadeh & Ghodsi 2023): gradient *ascent* on the input
of a teacher-student divergence, the new points added to the batch with the teacher's soft labels.

Only the paper's abstract is public: "perturbing data samples in the direction of the gradient of the
difference between the student and the teacher" to "maximize the divergence", then "augmenting the
training set" with them. Everything else here -- the divergence (KL at the KD temperature or MSE of
logits), the number of steps, the step size, sign / L2 steps, the epsilon ball, per-batch regeneration
and the fraction of the batch -- is a default chosen by rolekd, not a setting from the paper.

This module also holds what both agents share: the side-effect-free model context, the per-sample
divergences and how generated samples join a batch.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..augment.base import AugmentContext, Batch
from ..config import BackwardAgentConfig

Divergence = Literal["kl", "mse"]
StepType = Literal["raw", "sign", "l2"]


# ---- shared by the agents ------------------------------------------------------------------------


def kl_per_sample(target_logits: Tensor, logits: Tensor, temperature: float) -> Tensor:
    """KL(softmax(target/T) || softmax(logits/T)) per sample, times T^2 (the KD convention)."""
    log_p = F.log_softmax(target_logits / temperature, dim=1)
    log_q = F.log_softmax(logits / temperature, dim=1)
    return (log_p.exp() * (log_p - log_q)).sum(1) * temperature**2


def divergence_per_sample(
    teacher_logits: Tensor, student_logits: Tensor, kind: Divergence, temperature: float
) -> Tensor:
    """D(T(x), S(x)) per sample: KL(teacher || student) at ``temperature``, or the MSE of the logits."""
    if kind == "kl":
        return kl_per_sample(teacher_logits, student_logits, temperature)
    return (teacher_logits - student_logits).pow(2).mean(1)


@contextmanager
def eval_mode(*models: nn.Module) -> Iterator[None]:
    """Every module of ``models`` in eval mode (BatchNorm statistics frozen, no dropout), each module's
    own flag restored afterwards -- also when a model was in a mixed train/eval state."""
    modules = [m for model in models for m in model.modules()]
    flags = [m.training for m in modules]
    for model in models:
        model.eval()
    try:
        yield
    finally:
        for m, flag in zip(modules, flags):
            m.training = flag


def teacher_and_student(ctx: AugmentContext, agent: str) -> tuple[nn.Module, nn.Module]:
    missing = [role for role in ("teacher", "student") if role not in ctx.models]
    if missing:
        raise ValueError(
            f"the {agent} agent needs the {' and '.join(missing)} in the augment context: agents run only when a "
            "student is distilled from a teacher (distill.method other than 'none')"
        )
    return ctx.models["teacher"], ctx.models["student"]


def pick(n: int, fraction: float, generator: torch.Generator, device: torch.device) -> Tensor:
    """Indices of ``round(fraction * n)`` (at least one) distinct samples, drawn with ``generator``."""
    k = min(n, max(1, round(fraction * n)))
    return torch.randperm(n, generator=generator, device=device)[:k]


def append_samples(batch: Batch, images: Tensor, source: Tensor) -> Batch:
    """The batch plus generated ``images`` made from samples ``source``; these carry their source's
    label (used for train-accuracy logging only) and ``hard_mask`` False: teacher soft labels only."""
    n = len(batch)
    mask = batch.hard_mask if batch.hard_mask is not None else torch.ones(n, dtype=torch.bool, device=images.device)
    return Batch(
        torch.cat([batch.images, images.to(batch.images.dtype)]),
        torch.cat([batch.labels, batch.labels[source]]),
        torch.cat([mask, torch.zeros(len(source), dtype=torch.bool, device=mask.device)]),
    )


def input_bounds(ctx: AugmentContext, channels: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """The normalised images of pixel values 0 and 255: the valid input range, per channel."""
    if ctx.normalize is None:
        raise ValueError("input-space agents need ctx.normalize (the Normalizer) to know the valid pixel range")
    ends = torch.tensor([0.0, 255.0], device=device).view(2, 1, 1, 1).expand(2, channels, 1, 1)
    lo, hi = ctx.normalize(ends)
    return lo.unsqueeze(0), hi.unsqueeze(0)


# ---- the backward-pass agent ---------------------------------------------------------------------


def ascent_direction(grad: Tensor, step_type: StepType) -> Tensor:
    if step_type == "sign":
        return grad.sign()
    if step_type == "l2":
        norm = grad.flatten(1).norm(dim=1).clamp_min(torch.finfo(grad.dtype).tiny)
        return grad / norm.view(-1, *[1] * (grad.dim() - 1))
    return grad


class BackwardPassAgent:
    """Input-space augmenter: ``fraction`` of the batch, perturbed by ``steps`` ascent steps on D(T(x), S(x)),
    appended with ``hard_mask`` False.

    Raw steps follow the gradient of each sample's own divergence (the batch's sum), so a sample's step
    does not depend on the batch size. ``epsilon`` projects onto the L-inf ball around the start point;
    every step is clamped to the normalised image of the pixel range [0, 255]. Generation runs both models
    in eval mode (restored after) and takes ``torch.autograd.grad`` w.r.t. the input only, so weights,
    their ``.grad`` and BatchNorm statistics are untouched; a quantised student is differentiated
    through its straight-through estimators, exactly as in training.
    """

    space: Literal["input"] = "input"

    def __init__(self, settings: BackwardAgentConfig | None = None) -> None:
        """``settings``: the ``agents.backward`` section (its defaults when omitted: one place for them)."""
        s = settings or BackwardAgentConfig()
        self.steps, self.step_size, self.step_type, self.epsilon = s.steps, s.step_size, s.step_type, s.epsilon
        self.divergence, self.temperature, self.fraction = s.divergence, s.temperature, s.fraction

    def divergence_of(self, x: Tensor, teacher: nn.Module, student: nn.Module) -> Tensor:
        """D per sample at ``x`` (differentiable w.r.t. ``x``; the caller chooses modes)."""
        return divergence_per_sample(teacher(x), student(x), self.divergence, self.temperature)

    def ascend(self, x: Tensor, teacher: nn.Module, student: nn.Module, lo: Tensor, hi: Tensor) -> Tensor:
        """``steps`` projected ascent steps from ``x``; returns detached points in [lo, hi]."""
        start = x.detach()
        point = start
        with eval_mode(teacher, student), torch.enable_grad():
            for _ in range(self.steps):
                point = point.detach().requires_grad_(True)
                (grad,) = torch.autograd.grad(self.divergence_of(point, teacher, student).sum(), point)
                point = point.detach() + self.step_size * ascent_direction(grad, self.step_type)
                if self.epsilon is not None:
                    point = start + (point - start).clamp(-self.epsilon, self.epsilon)
                point = torch.maximum(torch.minimum(point, hi), lo)
        return point.detach()

    def generate(self, x: Tensor, ctx: AugmentContext) -> Tensor:
        """Auxiliary samples from every sample of ``x`` (normalised float)."""
        teacher, student = teacher_and_student(ctx, "backward")
        lo, hi = input_bounds(ctx, x.shape[1], x.device)
        return self.ascend(x, teacher, student, lo.to(x.dtype), hi.to(x.dtype))

    def __call__(self, batch: Batch, ctx: AugmentContext) -> Batch:
        source = pick(len(batch), self.fraction, ctx.generator, batch.images.device)
        return append_samples(batch, self.generate(batch.images[source], ctx), source)

    def __repr__(self) -> str:
        eps = f", epsilon={self.epsilon}" if self.epsilon is not None else ""
        return (
            f"BackwardPassAgent({self.divergence}, steps={self.steps}, step_size={self.step_size}, "
            f"{self.step_type}{eps}, fraction={self.fraction})"
        )
