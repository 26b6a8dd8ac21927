"""HARD-style learned augmentation (after Nix, Burg & Sinz 2023): an augmentation model trained in
alternation with the student to produce inputs on which teacher and student *disagree*.

The public abstract gives the idea (synthetic points "for which the teacher and the student disagree";
augmentation models from spatial transformations to a VAE; a toy where this transfers shift
equivariance). The objective below, its teacher-consistency term, the update schedule, the affine
parameterisation and every default are choices made by rolekd, not settings from the paper:

    L_aug = -KL_T(t(x~) || s(x~)) + consistency * KL_T(t(x) || t(x~)),    x~ = a(x, noise)

minimised by the augmentor's own Adam every ``update_every`` student steps. The student then sees the
batch plus augmented copies of a ``fraction`` of it, supervised by the teacher's soft labels only
(``hard_mask`` False): the consistency term is a soft penalty, not a guarantee that the label survived
(a digit shifted half out of the frame has none), so labels are never trusted on generated points.

Augmentors are ``nn.Module``s with ``forward(x, generator) -> x_aug`` on normalised images; the
agent works with any of them. :func:`register_augmentor` adds one (e.g. a VAE latent perturbation
loaded from a user's checkpoint with ``torch.load(..., weights_only=True)``) under a name that
``agents.hard.augmentor`` selects.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..augment.base import AugmentContext, Batch
from ..config import HardAgentConfig
from ..registry import Registry
from .backward import append_samples, eval_mode, kl_per_sample, pick, teacher_and_student


class Augmentor(nn.Module):
    """A sampled, differentiable transformation of normalised images ``(N, C, H, W)``.

    ``forward(x, generator)`` draws its noise from ``generator``; with ``generator=None`` it returns
    the distribution's central (noise-free) transformation.
    """

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:  # pragma: no cover
        raise NotImplementedError


AugmentorBuilder = Callable[[HardAgentConfig], Augmentor]
_AUGMENTORS: Registry[AugmentorBuilder] = Registry("augmentor")


def register_augmentor(name: str) -> Callable[[AugmentorBuilder], AugmentorBuilder]:
    """Decorator: ``builder(cfg: HardAgentConfig) -> Augmentor`` under ``name`` (its own settings in
    ``cfg.augmentor_args``)."""
    return _AUGMENTORS.decorator(name)


def available_augmentors() -> list[str]:
    return _AUGMENTORS.names()


def build_augmentor(cfg: HardAgentConfig) -> Augmentor:
    return _AUGMENTORS.get(cfg.augmentor, "agents.hard.augmentor")(cfg)


# ---- the spatial-transformer augmentor -----------------------------------------------------------


class SpatialAugmentor(Augmentor):
    """A Gaussian over bounded affine transformations, shared by all images, warped with
    ``affine_grid``/``grid_sample``.

    Per sample, z = mean + exp(log_std) * noise (reparameterised, so both are learned); each
    parameter is ``bound * tanh(z)``: translation (tx, ty) in fractions of the image side, then in
    ``"affine"`` mode rotation (rad), isotropic scale offset and shear (x, y). ``mean`` starts at 0,
    which is the identity transformation. Pixels from outside the image are 0 in normalised space,
    i.e. the dataset mean, as PBA fills.
    """

    def __init__(self, settings: HardAgentConfig | None = None) -> None:
        """``settings``: the ``agents.hard`` section (its defaults when omitted: one place for them)."""
        super().__init__()
        s = settings or HardAgentConfig()
        self.mode = s.mode
        # grid coordinates span 2 per image side, so a translation of f sides is 2f grid units
        bounds = [2 * s.max_translation, 2 * s.max_translation]
        if s.mode == "affine":
            bounds += [math.radians(s.max_rotation), s.max_scale, s.max_shear, s.max_shear]
        self.register_buffer("bounds", torch.tensor(bounds), persistent=False)
        self.mean = nn.Parameter(torch.zeros(len(bounds)))
        self.log_std = nn.Parameter(torch.full((len(bounds),), math.log(s.init_std)))

    def sample_params(self, n: int, generator: torch.Generator | None) -> Tensor:
        """Bounded parameters ``(n, P)``; the noise comes from ``generator`` (none: the mean)."""
        z = self.mean.expand(n, -1)
        if generator is not None:
            noise = torch.randn(n, self.mean.numel(), generator=generator, device=generator.device)
            z = z + self.log_std.exp() * noise.to(self.mean.device)
        return self.bounds * torch.tanh(z)

    def theta(self, params: Tensor) -> Tensor:
        """``(n, 2, 3)`` sampling matrices: output pixel p reads input at A p + t."""
        t = params[:, :2].unsqueeze(2)
        if self.mode == "translation":
            eye = torch.eye(2, device=params.device, dtype=params.dtype).expand(len(params), 2, 2)
            return torch.cat([eye, t], dim=2)
        angle, scale, shear_x, shear_y = params[:, 2:].unbind(1)
        cos, sin, s = angle.cos(), angle.sin(), 1 + scale
        rotation = torch.stack([cos, -sin, sin, cos], 1).view(-1, 2, 2)
        shear = torch.stack([torch.ones_like(cos), shear_x, shear_y, torch.ones_like(cos)], 1).view(-1, 2, 2)
        return torch.cat([rotation @ shear * s.view(-1, 1, 1), t], dim=2)

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        theta = self.theta(self.sample_params(len(x), generator)).to(x.dtype)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    def extra_repr(self) -> str:
        return f"mode={self.mode}, bounds={[round(b, 4) for b in self.bounds.tolist()]}"


@register_augmentor("spatial")
def _spatial(cfg: HardAgentConfig) -> Augmentor:
    return SpatialAugmentor(cfg)


# ---- the agent -----------------------------------------------------------------------------------


class HardAgent:
    """Input-space augmenter owning an :class:`Augmentor` and its Adam optimiser.

    On each call with the student in train mode (a training step of the Trainer), the augmentor first
    takes one step on ``-disagreement + consistency * teacher_shift`` every ``update_every`` calls; then
    augmented copies of a random ``fraction`` of the batch are appended (``hard_mask`` False). The update
    runs both networks in eval mode (restored after) and back-propagates into the augmentor's parameters
    only, so the student's weights, gradients and BatchNorm statistics are untouched.
    """

    space: Literal["input"] = "input"

    def __init__(self, augmentor: Augmentor, settings: HardAgentConfig | None = None) -> None:
        """``settings``: the ``agents.hard`` section (its defaults when omitted); its augmentor fields are the
        ``augmentor``'s business."""
        s = settings or HardAgentConfig()
        self.augmentor = augmentor
        self.consistency, self.update_every = s.consistency, s.update_every
        self.fraction, self.temperature = s.fraction, s.temperature
        self.optimizer = torch.optim.Adam(augmentor.parameters(), lr=s.lr)
        self.calls = 0  # training calls seen: decides when the augmentor steps, checkpointed

    @classmethod
    def from_config(cls, cfg: HardAgentConfig) -> "HardAgent":
        return cls(build_augmentor(cfg), cfg)

    def losses(
        self, x: Tensor, teacher: nn.Module, student: nn.Module, generator: torch.Generator | None
    ) -> dict[str, Tensor]:
        """Mean disagreement KL(t(x~) || s(x~)) and teacher shift KL(t(x) || t(x~)) on augmented ``x``."""
        with torch.no_grad():
            reference = teacher(x)
        x_aug = self.augmentor(x, generator)
        teacher_aug = teacher(x_aug)
        return {
            "disagreement": kl_per_sample(teacher_aug, student(x_aug), self.temperature).mean(),
            "teacher_shift": kl_per_sample(reference, teacher_aug, self.temperature).mean(),
        }

    def update(
        self, x: Tensor, teacher: nn.Module, student: nn.Module, generator: torch.Generator | None
    ) -> dict[str, Tensor]:
        """One augmentor step on ``x``; returns the (detached) terms before the step."""
        self._follow(x.device)
        params = list(self.augmentor.parameters())
        with eval_mode(teacher, student), torch.enable_grad():
            terms = self.losses(x, teacher, student, generator)
            loss = self.consistency * terms["teacher_shift"] - terms["disagreement"]
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward(inputs=params)
        self.optimizer.step()
        return {k: v.detach() for k, v in terms.items()}

    @torch.no_grad()
    def generate(self, x: Tensor, ctx: AugmentContext) -> Tensor:
        """Augmented copies of every sample of ``x`` (normalised float); never updates the augmentor."""
        self._follow(x.device)
        return self.augmentor(x, ctx.generator)

    def __call__(self, batch: Batch, ctx: AugmentContext) -> Batch:
        teacher, student = teacher_and_student(ctx, "hard")
        source = pick(len(batch), self.fraction, ctx.generator, batch.images.device)
        x = batch.images[source]
        if student.training:
            if self.calls % self.update_every == 0:
                self.update(x, teacher, student, ctx.generator)
            self.calls += 1
        return append_samples(batch, self.generate(x, ctx), source)

    def _follow(self, device: torch.device) -> None:
        """Move the augmentor and its optimiser state to the batch's device (once, lazily: the agent is
        built before the Trainer knows the device, and a checkpoint may be restored on the CPU)."""
        if next(self.augmentor.parameters()).device == device:
            return
        self.augmentor.to(device)
        for state in self.optimizer.state.values():
            for key, value in state.items():
                if isinstance(value, Tensor) and key != "step":  # Adam keeps its step count on the CPU
                    state[key] = value.to(device)

    # ---- checkpoints (the Trainer saves these with the model) -------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {"augmentor": self.augmentor.state_dict(), "optimizer": self.optimizer.state_dict(), "calls": self.calls}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.augmentor.load_state_dict(state["augmentor"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.calls = int(state["calls"])

    def __repr__(self) -> str:
        return (
            f"HardAgent({self.augmentor!r}, consistency={self.consistency}, update_every={self.update_every}, "
            f"fraction={self.fraction})"
        )
