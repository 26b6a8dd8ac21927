"""The distillation objective: task loss + lambda * a KD method's terms, around a frozen teacher.

``Distiller`` owns what every method needs and none should re-implement: running the teacher
(eval mode and no gradients, enforced on every step, unless the method trains it as a DML peer:
then a copy of it is trained, and the teacher handed in is never changed),
feature taps on both networks, the lambda schedule, optional KD gradient clipping, the
pre-training shape check and the initialisation phase of methods that have one (MHGD).

The frozen teacher is a plain attribute, not a submodule, so it never reaches ``state_dict``,
``extra_parameters`` or ``checkpoint_state``; a trained DML peer is registered as ``peer`` and is
in all three.
"""

from __future__ import annotations

import copy
import itertools
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import torch
from torch import Tensor, nn

from ..augment.base import Batch
from ..models import FeatureTaps, default_taps
from ..training.objective import Objective, StepContext, StepOutput, hard_label_ce
from .base import KDMethod, Outputs, require
from .clip import clip_to_task, warmup
from .schedule import LambdaSchedule

KD_PREFIX = "kd_"  # loss terms named kd_* are distillation terms; the rest are task terms
Normalize = Callable[[Tensor], Tensor]


class Distiller(Objective):
    """Per step: CE over hard-labelled samples, plus ``lambda * term`` for each of the method's terms
    over ALL samples (soft-labelled ones included), teacher and student on the same batch."""

    def __init__(
        self,
        teacher: nn.Module,
        student: nn.Module,
        method: KDMethod,
        *,
        schedule: LambdaSchedule,
        clip_grad: bool = False,
        student_taps: Sequence[str] | None = None,
        teacher_taps: Sequence[str] | None = None,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        self.method = method
        self.schedule = schedule
        self.lam = schedule.lam
        self.clip_grad = clip_grad
        self.label_smoothing = label_smoothing
        self._progress = 0.0
        object.__setattr__(self, "_student", student)  # plain attributes: never a submodule
        object.__setattr__(self, "_teacher", teacher)
        if method.trains_teacher:  # a copy: the teacher handed in is shared (other rows, the agents) and stays fixed
            teacher = copy.deepcopy(teacher).requires_grad_(True)
            object.__setattr__(self, "_teacher", teacher)
            self.peer = teacher
        else:
            teacher.requires_grad_(False).eval()
        self._student_taps = _taps(student, student_taps, method, "student")
        self._teacher_taps = _taps(teacher, teacher_taps, method, "teacher")

    @property
    def teacher(self) -> nn.Module:
        return self._teacher

    @property
    def needs_initialization(self) -> bool:
        """True until the method's initialisation phase has run (see :meth:`initialize`)."""
        return self.method.needs_init and not self.method.initialized

    # ---- the Objective interface -------------------------------------------------------------

    def forward(self, model: nn.Module, batch: Batch, ctx: StepContext) -> StepOutput:
        self._progress = ctx.progress
        student = _run(model, self._student_taps, batch.images, "student")
        teacher = self._run_teacher(batch.images, training=model.training)
        terms = self.method(student, teacher, _targets(batch, teacher.logits.detach()))
        losses = {"ce": hard_label_ce(student.logits, batch, self.label_smoothing)}
        if self.method.trains_teacher:
            losses["peer_ce"] = hard_label_ce(teacher.logits, batch, self.label_smoothing)
        losses.update({KD_PREFIX + name: self.lam * value for name, value in terms.items()})
        return StepOutput(losses, student.logits, {"lam": torch.tensor(self.lam, device=student.logits.device)})

    def on_epoch_start(self, epoch: int, num_epochs: int) -> None:
        self.lam = self.schedule.value(epoch, num_epochs)
        self.method.on_epoch_start(epoch, num_epochs)

    def extra_parameters(self) -> Iterable[nn.Parameter]:
        return list(self.peer.parameters()) if self.method.trains_teacher else []

    def backward(self, out: StepOutput, params: list[Tensor]) -> None:
        """With ``clip_grad``, task and KD gradients are taken separately and combined per tensor by
        :func:`~rolekd.kd.clip.clip_to_task` (one extra backward pass); otherwise one backward."""
        kd_terms = [v for k, v in out.losses.items() if k.startswith(KD_PREFIX)]
        if not self.clip_grad or not kd_terms:
            super().backward(out, params)
            return
        task = torch.stack([v for k, v in out.losses.items() if not k.startswith(KD_PREFIX)]).sum()
        params = [p for p in params if p.requires_grad]
        task_grads = torch.autograd.grad(task, params, retain_graph=True, allow_unused=True)
        kd_grads = torch.autograd.grad(torch.stack(kd_terms).sum(), params, allow_unused=True)
        scale = warmup(self._progress)
        for p, g_task, g_kd in zip(params, task_grads, kd_grads):
            g = clip_to_task(g_task, g_kd, scale)
            if g is not None:
                p.grad = g if p.grad is None else p.grad + g

    def checkpoint_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"method": self.method.checkpoint_state()}
        if self.method.trains_teacher:
            state["peer"] = self.peer.state_dict()
        return state

    def load_checkpoint_state(self, state: Mapping[str, Any]) -> None:
        expected = {"method", "peer"} if self.method.trains_teacher else {"method"}
        require(set(state) == expected, f"distiller checkpoint state has {sorted(state)}, expected {sorted(expected)}")
        self.method.load_checkpoint_state(state["method"])
        if self.method.trains_teacher:
            self.peer.load_state_dict(state["peer"])

    # ---- before training ---------------------------------------------------------------------

    def check(self, sample: Batch | Tensor, normalize: Normalize | None = None) -> None:
        """One no-grad forward of both networks on a few images on the student's device (model input,
        or uint8 pixels with their ``normalize``); a teacher/student mismatch the method cannot relate
        is a one-line ``ValueError``."""
        images = _inputs(sample, normalize)
        with torch.no_grad(), _eval_mode(self._student, self._teacher):
            student = _run(self._student, self._student_taps, images, "student")
            teacher = self._run_teacher(images, training=False)
        require(
            student.logits.dim() == 2 and student.logits.shape == teacher.logits.shape,
            f"teacher and student disagree on the output: teacher logits {tuple(teacher.logits.shape[1:])}, "
            f"student {tuple(student.logits.shape[1:])} (different number of classes?)",
        )
        self.method.check(student, teacher)

    def initialize(self, batches: Iterable[Batch | Tensor], normalize: Normalize | None = None) -> list[float]:
        """The method's initialisation phase on the frozen teacher's features of these batches
        (e.g. a few epochs of augmented training images; model input, or uint8 pixels with their
        ``normalize``); one step per batch, returns the losses. Only MHGD (and II-KD through it)
        has such a phase: Lee & Song train its attention network here. Others return ``[]``."""
        if not self.method.needs_init:
            return []
        return [self.method.fit_step(self._run_teacher(_inputs(b, normalize), training=False)) for b in batches]

    def skip_initialization(self) -> None:
        """Distil without the method's initialisation phase: MHGD through its random attention
        network, as role-kd did (``distill.init_epochs: 0``)."""
        if self.method.needs_init:
            self.method.skip_initialization()

    def close(self) -> None:
        """Remove the forward hooks from both networks (also done when the distiller is discarded)."""
        for taps in (getattr(self, "_student_taps", None), getattr(self, "_teacher_taps", None)):
            if taps is not None:
                taps.remove()

    def __del__(self) -> None:
        self.close()

    # ---- internals ---------------------------------------------------------------------------

    def _run_teacher(self, images: Tensor, training: bool) -> Outputs:
        teacher = self._teacher
        first = next(itertools.chain(teacher.parameters(), teacher.buffers()), None)
        if first is not None and first.device != images.device:
            teacher.to(images.device)
        if self.method.trains_teacher:
            teacher.train(training)
            return _run(teacher, self._teacher_taps, images, "teacher")
        teacher.eval()  # every step: a stray .train() elsewhere must not move its BatchNorm statistics
        with torch.no_grad():
            return _run(teacher, self._teacher_taps, images, "teacher")


def _taps(model: nn.Module, paths: Sequence[str] | None, method: KDMethod, role: str) -> FeatureTaps | None:
    if method.taps == "none":
        return None
    paths = list(paths) if paths is not None else default_taps(model)
    if not paths:
        candidates = [n for n, m in model.named_modules() if n and isinstance(m, nn.Sequential)][:4] or \
            [n for n, _ in model.named_children()][:4]
        raise ValueError(
            f"distill method {method.name!r} reads feature taps but the {role} ({type(model).__name__}) has no "
            f"default taps; set {role}.taps: [...] (module paths, e.g. {', '.join(candidates) or 'none found'})"
        )
    return FeatureTaps(model, paths[-1:] if method.taps == "last" else paths)


def _run(model: nn.Module, taps: FeatureTaps | None, images: Tensor, role: str) -> Outputs:
    if taps is None:
        return Outputs(model(images))
    taps.clear()
    logits = model(images)
    features = taps.features
    require(
        len(features) == len(taps.paths),
        f"the {role}'s feature taps {taps.paths} did not all fire: is this the model the objective was built for?",
    )
    taps.clear()
    return Outputs(logits, features)


def _inputs(sample: Batch | Tensor, normalize: Normalize | None) -> Tensor:
    images = sample.images if isinstance(sample, Batch) else sample
    return images if normalize is None else normalize(images)


def _targets(batch: Batch, teacher_logits: Tensor) -> Tensor:
    """The class per sample: the label where it is valid, the teacher's prediction elsewhere."""
    if batch.hard_mask is None:
        return batch.labels
    return torch.where(batch.hard_mask, batch.labels, teacher_logits.argmax(dim=1))


@contextmanager
def _eval_mode(*models: nn.Module) -> Iterator[None]:
    modes = [(m, m.training) for model in models for m in model.modules()]
    try:
        for model in models:
            model.eval()
        yield
    finally:
        for m, training in modes:
            m.training = training
