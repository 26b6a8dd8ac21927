"""The one training loop. Teacher training, KD, a search trial and an agent run all go through it;
they differ only in the objective and augmenters they hand in.

:class:`Trainer` owns one epoch and evaluation (what a Ray trial iterates); :func:`fit` adds the
run folder around it: JSON-lines metrics, atomic ``last.pt``/``best.pt``, resume and NaN stops.
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..atomic import DiskFullError, make_dirs
from ..augment.base import AugmentContext, Augmenter, Batch
from ..config import TrainConfig
from ..data.tensors import ImageSet, Normalizer, batch_indices, steps_per_epoch
from .checkpoint import CheckpointError, check_weights, load_checkpoint, save_checkpoint
from .events import MetricsLog
from .fastpath import resolve_fast_path
from .objective import Objective, StepContext, StepOutput, total_loss

Callback = Callable[[str, dict[str, Any]], None]
REPORT_EVERY = 20  # steps between host syncs for progress and the NaN check


class NonFiniteLossError(ArithmeticError):
    """Training produced NaN/inf; the message names the term, the epoch and the last good checkpoint."""


def make_optimizer(cfg: TrainConfig, params: Sequence[nn.Parameter]) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0,
            weight_decay=cfg.weight_decay,
        )
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, eps=1e-5)


def lr_factor(cfg: TrainConfig, step: int, spe: int, epochs: int | None = None) -> float:
    """Multiplier of the base lr after ``step`` optimiser steps (``spe`` steps per epoch) of a run of
    ``epochs`` (default ``cfg.epochs``)."""
    n = cfg.epochs if epochs is None else epochs
    if cfg.lr_schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * min(step, n * spe) / (n * spe)))
    if cfg.lr_schedule == "step":
        epoch = step // spe
        return cfg.gamma ** sum(epoch >= round(m * n) for m in cfg.milestones)
    return 1.0


def epoch_generator(seed: int, epoch: int, device: torch.device) -> torch.Generator:
    """A generator per (seed, epoch): a resumed run replays exactly the batches it would have seen."""
    return torch.Generator(device=device).manual_seed(seed * 1_000_003 + epoch * 7919 + 17)


class Trainer:
    """One model, one objective, one optimiser; ``epoch`` counts completed epochs."""

    def __init__(
        self,
        model: nn.Module,
        train_set: ImageSet,
        eval_set: ImageSet | None,
        objective: Objective,
        augmenters: Sequence[Augmenter],
        cfg: TrainConfig,
        normalizer: Normalizer,
        seed: int = 0,
        context_models: dict[str, nn.Module] | None = None,
        epochs: int | None = None,
    ) -> None:
        """``epochs`` (default ``cfg.epochs``) is how long this run is: a search trial trains the role's recipe
        for the search's epochs, its lr schedule spanning them."""
        self.device = train_set.device
        self.cfg, self.seed, self.normalizer = cfg, seed, normalizer
        self.num_epochs = cfg.epochs if epochs is None else epochs
        self.train_set, self.eval_set = train_set, eval_set
        self.fast = resolve_fast_path(cfg, self.device)
        self.model = model.to(self.device)
        if self.fast.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.forward_model: nn.Module = torch.compile(self.model) if self.fast.compile else self.model
        self.objective = objective.to(self.device)
        self.augmenters = list(augmenters)
        self.pixel_augs = [a for a in augmenters if a.space == "pixel"]
        self.input_augs = [a for a in augmenters if a.space == "input"]
        self.context_models = {"student": self.model, **(context_models or {})}
        params = [p for p in self.model.parameters() if p.requires_grad] + list(objective.extra_parameters())
        self.params = params
        self.optimizer = make_optimizer(cfg, params)
        self.steps_per_epoch = steps_per_epoch(len(train_set), cfg.batch_size, drop_last=True)
        spe = self.steps_per_epoch
        n = self.num_epochs
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: lr_factor(cfg, s, spe, n))
        self.epoch = 0

    # -- one epoch ---------------------------------------------------------------------------
    def _inputs(self, images: Tensor) -> Tensor:
        return self.fast.layout(self.normalizer(images))

    def augment(self, batch: Batch, ctx: AugmentContext) -> Batch:
        for aug in self.pixel_augs:
            batch = aug(batch, ctx)
        batch = batch.with_images(self._inputs(batch.images))
        for aug in self.input_augs:
            batch = aug(batch, ctx)
        return batch

    def _context(self, epoch: int, gen: torch.Generator) -> AugmentContext:
        return AugmentContext(epoch=epoch, num_epochs=self.num_epochs, generator=gen, fill=self.normalizer.fill,
                              models=self.context_models, normalize=self.normalizer)

    def _forward_backward(self, batch: Batch, actx: AugmentContext, sctx: StepContext) -> tuple[Batch, StepOutput]:
        """Augment, forward the objective, backward: a training step up to the optimiser update."""
        batch = self.augment(batch, actx)
        with self.fast.autocast():
            out = self.objective(self.forward_model, batch, sctx)
        self.optimizer.zero_grad(set_to_none=True)
        self.objective.backward(out, self.params)
        return batch, out

    def check_step(self, n: int = 8) -> None:
        """One step's augmentation, forward and backward on the first ``n`` training images, without updating
        the weights: the pre-flight's proof that this network, objective and augmenters work together."""
        self.model.train()
        self.objective.train()
        idx = torch.arange(min(n, len(self.train_set)), device=self.device)
        actx = self._context(0, epoch_generator(self.seed, 0, self.device))
        _, out = self._forward_backward(Batch(self.train_set.images[idx], self.train_set.labels[idx]), actx,
                                        StepContext(0, self.num_epochs, 0, 1))
        self.optimizer.zero_grad(set_to_none=True)
        loss = total_loss(out).detach()
        if not torch.isfinite(loss):
            raise NonFiniteLossError(f"the first step's loss is {loss.item()}: expected a finite loss")

    def train_epoch(self, callback: Callback | None = None) -> dict[str, float]:
        cfg, epoch = self.cfg, self.epoch
        self.model.train()
        self.objective.train()
        self.objective.on_epoch_start(epoch, self.num_epochs)
        gen = epoch_generator(self.seed, epoch, self.device)
        actx = self._context(epoch, gen)
        lr = self.optimizer.param_groups[0]["lr"]
        sums: dict[str, Tensor] = {}
        correct = torch.zeros((), device=self.device)
        seen = 0
        start = time.perf_counter()
        spe = self.steps_per_epoch
        for step, idx in enumerate(batch_indices(len(self.train_set), cfg.batch_size, gen, True, self.device)):
            actx.step = step
            batch = Batch(self.train_set.images[idx], self.train_set.labels[idx])
            batch, out = self._forward_backward(batch, actx, StepContext(epoch, self.num_epochs, step, spe))
            if cfg.grad_clip:
                nn.utils.clip_grad_norm_(self.params, cfg.grad_clip)
            self.optimizer.step()
            self.scheduler.step()
            with torch.no_grad():
                terms = {**out.losses, **out.logs}
                terms["loss"] = total_loss(out)
                for k, v in terms.items():
                    sums[k] = sums.get(k, 0) + v.detach().float() * len(batch)
                correct += (out.logits.argmax(1) == batch.labels).sum()
            seen += len(batch)
            if (step + 1) % REPORT_EVERY == 0 or step + 1 == spe:
                self._check_finite(sums, seen, step)
                if callback:
                    callback("step", {
                        "epoch": epoch, "step": step + 1, "steps": spe, "loss": sums["loss"].item() / seen,
                        "images_per_s": seen / (time.perf_counter() - start),
                    })
        elapsed = time.perf_counter() - start
        metrics = {f"train_{k}": (v.item() / max(seen, 1)) for k, v in sums.items()}
        metrics["train_acc"] = correct.item() / max(seen, 1)
        metrics["lr"] = lr
        metrics["images_per_s"] = seen / elapsed if elapsed > 0 else 0.0
        metrics["epoch_time_s"] = elapsed
        self.epoch += 1
        return metrics

    def _check_finite(self, sums: dict[str, Tensor], seen: int, step: int) -> None:
        bad = [k for k, v in sums.items() if not torch.isfinite(v).all()]
        if bad:
            raise NonFiniteLossError(
                f"loss term {bad[0]!r} became non-finite at epoch {self.epoch + 1}, step {step + 1}"
            )

    # -- evaluation --------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, data: ImageSet | None = None, batch_size: int = 1000) -> dict[str, float]:
        data = data if data is not None else self.eval_set
        if data is None or len(data) == 0:
            return {}
        return evaluate_model(self.forward_model, data, self.normalizer, batch_size, self.cfg)

    # -- state ---------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "objective": self.objective.checkpoint_state(),
            "augmenters": [_state_of(a) for a in self.augmenters],
            "epoch": self.epoch,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.objective.load_checkpoint_state(state.get("objective") or {})
        for aug, aug_state in zip(self.augmenters, state.get("augmenters") or []):
            if aug_state:
                aug.load_state_dict(aug_state)
        self.epoch = int(state["epoch"])


def _state_of(augmenter: Augmenter) -> dict[str, Any]:
    """Learned augmenters (e.g. HARD's augmentor) checkpoint with the model; stateless ones give {}."""
    get = getattr(augmenter, "state_dict", None)
    return get() if callable(get) else {}


@torch.no_grad()
def evaluate_model(
    model: nn.Module, data: ImageSet, normalizer: Normalizer, batch_size: int = 1000, cfg: TrainConfig | None = None
) -> dict[str, float]:
    """Top-1 accuracy and mean loss over every image, BatchNorm in eval mode."""
    was_training = model.training
    model.eval()
    correct = torch.zeros((), device=data.device)
    loss = torch.zeros((), device=data.device)
    fast = resolve_fast_path(cfg, data.device)
    for idx in batch_indices(len(data), batch_size, None, False, data.device):
        x = fast.layout(normalizer(data.images[idx]))
        with fast.autocast():
            logits = model(x).float()
        y = data.labels[idx]
        loss += F.cross_entropy(logits, y, reduction="sum")
        correct += (logits.argmax(1) == y).sum()
    model.train(was_training)
    n = len(data)
    return {"acc": correct.item() / n, "loss": loss.item() / n}


# ---- the run folder around a Trainer ------------------------------------------------------------


@dataclass
class FitResult:
    last: dict[str, Any]
    best_acc: float
    best_epoch: int
    history: list[dict[str, Any]]


def fit(
    trainer: Trainer,
    out_dir: str | Path | None,
    meta: dict[str, Any] | None = None,
    resume: bool = False,
    callback: Callback | None = None,
    eval_batch_size: int = 1000,
    eval_every: int = 1,
) -> FitResult:
    """Train to ``trainer.num_epochs``, evaluating every ``eval_every`` epochs and at the last; with ``out_dir``,
    keep metrics and checkpoints. The best epoch is the best evaluated one (train accuracy without an eval set).

    ``resume`` continues from ``out_dir/last.pt``; metrics past the checkpoint's epoch (written by a
    run killed mid-save) are dropped, so a resumed run ends identical to an uninterrupted one. Metrics are appended
    (``metrics.jsonl`` and TensorBoard events, :class:`~rolekd.training.events.MetricsLog`); a full disk is one
    line (:class:`~rolekd.atomic.DiskFullError`) and the last good checkpoint stays.
    """
    out = Path(out_dir) if out_dir is not None else None
    history: list[dict[str, Any]] = []
    best_acc, best_epoch = -1.0, 0
    log: MetricsLog | None = None
    if out is not None:
        make_dirs(out)
        last = out / "last.pt"
        if last.exists() and not resume:
            raise CheckpointError(f"{out} already holds a run (last.pt); pass --resume to continue it or choose another --out")
        resumed = resume and last.exists()
        if resumed:
            state = load_checkpoint(last, map_location=trainer.device)
            check_weights(trainer.model, state, f"--resume: {last}", meta or {})
            trainer.load_state_dict(state)
            best_acc, best_epoch = state.get("best_acc", -1.0), state.get("best_epoch", 0)
        log = MetricsLog(out, trainer.epoch if resumed else None)
        history = log.rows()
        if resumed and callback:
            callback("resume", {"epoch": trainer.epoch})
    with log or nullcontext():
        best_acc, best_epoch = _fit_epochs(trainer, out, log, dict(meta or {}), history, best_acc, best_epoch,
                                           callback, eval_batch_size, eval_every)
    return FitResult(history[-1] if history else {}, best_acc, best_epoch, history)


def _fit_epochs(trainer: Trainer, out: Path | None, log: MetricsLog | None, meta: dict[str, Any],
                history: list[dict[str, Any]], best_acc: float, best_epoch: int, callback: Callback | None,
                eval_batch_size: int, eval_every: int) -> tuple[float, int]:
    """The epochs left, each appended to ``history`` (and to ``log`` with the checkpoints, when ``out``); returns
    the best accuracy and its epoch."""
    total = trainer.num_epochs
    evaluates = trainer.eval_set is not None and len(trainer.eval_set) > 0
    while trainer.epoch < total:
        t0 = time.perf_counter()
        try:
            record: dict[str, Any] = {"epoch": trainer.epoch + 1, **trainer.train_epoch(callback)}
        except NonFiniteLossError as exc:
            kept = f"; kept the last good checkpoint {out / 'last.pt'}" if out is not None and (out / "last.pt").exists() else ""
            raise NonFiniteLossError(f"{exc}{kept}") from None
        due = record["epoch"] % eval_every == 0 or record["epoch"] == total
        if due:
            record.update({f"val_{k}": v for k, v in trainer.evaluate(batch_size=eval_batch_size).items()})
        record["time_s"] = time.perf_counter() - t0
        acc = record.get("val_acc", -1.0 if evaluates else record["train_acc"])
        if acc > best_acc:
            best_acc, best_epoch = acc, record["epoch"]
        record["best_acc"], record["best_epoch"] = best_acc, best_epoch
        history.append(record)
        if out is not None and log is not None:
            _save_epoch(trainer, out, log, record, meta, acc)
        if callback:
            callback("epoch", {**record, "epochs": total})
    return best_acc, best_epoch


def _save_epoch(trainer: Trainer, out: Path, log: MetricsLog, record: dict[str, Any], meta: dict[str, Any],
                acc: float) -> None:
    """The epoch's metrics line, ``best.pt`` (when it is the best) and then ``last.pt``: a failure before
    ``last.pt`` is replaced replays the epoch on resume, so ``best.pt`` never lags the best epoch that ``last.pt``
    records. A full disk names the last good checkpoint, which the atomic writes keep."""
    best_acc, best_epoch = record["best_acc"], record["best_epoch"]
    state = {**trainer.state_dict(), "meta": meta, "best_acc": best_acc, "best_epoch": best_epoch}
    try:
        log.append(record)
        if best_epoch == record["epoch"]:
            save_checkpoint(out / "best.pt", {"model": state["model"], "meta": meta, "epoch": record["epoch"], "acc": acc})
        save_checkpoint(out / "last.pt", state)
    except DiskFullError as exc:
        last, kept = out / "last.pt", record["epoch"] - 1
        said = f"kept the last good checkpoint {last} (epoch {kept})" if kept and last.exists() else \
            "no checkpoint was written yet"
        raise DiskFullError(exc.errno, f"epoch {record['epoch']}: {exc}; {said}") from None
