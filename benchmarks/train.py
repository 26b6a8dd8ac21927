"""Benchmark: a training step through rolekd vs a standard PyTorch CIFAR pipeline, same machine, same run.

Not a test. Measures images/s and the share of step time spent augmenting for

  (a) the reference: a torchvision-style Dataset over uint8 arrays with per-image PIL transforms
      (the same PBA-style late-epoch policy as benchmarks/augment.py, random crop with 4-px padding,
      horizontal flip, ToTensor, Normalize) + ``DataLoader`` with workers and pinned memory + a plain
      training loop; (a') with ``--reference-bf16`` the same loop also with bf16 autocast and channels_last
      (what a tuned standard pipeline does on a GPU);
  (b) rolekd: data resident on the device, the policy and crop/flip batched on the device, the one
      training loop (``Trainer``) — for the teacher step (CE), the KD student step (II-KD, 2-bit
      student) and one search trial's epoch on a reduced split; optionally the plain 2-bit student step
      (``--plain-student``: II-KD's denominator), the KD step with and without KD-gradient clipping
      (``--kd-clip both``) and the teacher step with ``train.compile`` (``--compile both``: the compile time,
      first epoch minus a steady one, apart from the steady-state rate).

Besides the markdown table, every row is printed as one machine-readable line ``json: {...}`` as soon as
it is measured (``benchmarks/gpu_check.py`` parses them).

    python benchmarks/train.py [--model resnet18] [--batch 128] [--steps 20] [--workers 2]
    python benchmarks/train.py --reference-bf16 --plain-student --kd-clip both --compile both

On CPU a ResNet-18 step is slow; ``--model resnet8 --width 16`` gives a quicker table. On the CPU rolekd's
fast path keeps fp32 and the default memory format (bf16 convolutions are slower there), while (a') runs CPU
autocast; compiling on the CPU takes many minutes (``--compile-skipped REASON`` lists the row unmeasured).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).parent))
from augment import LATE_POLICY_PBA, _pil_policy, synthetic_images  # noqa: E402  (the same PIL reference)

from rolekd.agents.policy import PolicyAugmenter  # noqa: E402
from rolekd.augment.base import AugmentContext, Augmenter, Batch  # noqa: E402
from rolekd.augment.baseline import BaselineAugmenter  # noqa: E402
from rolekd.augment.policy import Policy  # noqa: E402
from rolekd.config import DistillConfig, TrainConfig  # noqa: E402
from rolekd.data import ImageSet, Normalizer  # noqa: E402
from rolekd.kd import build_objective  # noqa: E402
from rolekd.models import build_model  # noqa: E402
from rolekd.quant import quantize_model  # noqa: E402
from rolekd.training import CrossEntropy, Trainer  # noqa: E402
from rolekd.training.fastpath import resolve_fast_path  # noqa: E402

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR_TRAIN = 50000
TABLE_HEAD = ("| path | images/s | vs (a) | CIFAR-10 epoch, 50k images (s) | augmentation share of step "
              "| compile (s) |\n|---|---:|---:|---:|---:|---:|")


class PilCifar(Dataset):
    """What a standard PyTorch CIFAR pipeline does per image, with a PBA policy in the PIL stage."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, policy: Policy) -> None:
        from torchvision import transforms

        self.images, self.labels = images, labels
        self.triples = [(e.op, e.prob / 10, e.mag) for e in policy.entries]
        self.post = transforms.Compose([
            transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(),
            transforms.ToTensor(), transforms.Normalize(MEAN, STD),
        ])

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        from PIL import Image

        img = _pil_policy(Image.fromarray(self.images[i]), self.triples)
        return self.post(img), int(self.labels[i])


@dataclass
class Row:
    """One measured (or skipped) path: a table row and its ``json:`` line."""

    key: str
    name: str
    images_per_s: float | None = None
    augment_share: float | None = None  # None: not measured for this path
    compile_s: float | None = None
    skipped: str | None = None

    @property
    def epoch_s(self) -> float | None:
        """A 50k-image CIFAR-10 epoch at this rate (steady state, without evaluation)."""
        return CIFAR_TRAIN / self.images_per_s if self.images_per_s else None

    def emit(self, base: float | None) -> None:
        if self.skipped:
            print(f"| {self.name} | skipped: {self.skipped} | | | | |")
        else:
            share = "–" if self.augment_share is None else f"{100 * self.augment_share:.1f} %"
            vs = f"{self.images_per_s / base:.2f}x" if base else "–"
            comp = "–" if self.compile_s is None else f"{self.compile_s:.1f}"
            print(f"| {self.name} | {self.images_per_s:.0f} | {vs} | {self.epoch_s:.0f} | {share} | {comp} |")
        print("json: " + json.dumps({**asdict(self), "epoch_s": self.epoch_s}), flush=True)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def reference(model, images, labels, policy, batch, steps, workers, device, bf16_cl: bool = False) -> dict[str, float]:
    """The standard loop; ``bf16_cl``: bf16 autocast and channels_last, as a tuned standard pipeline runs."""
    loader = DataLoader(PilCifar(images, labels, policy), batch_size=batch, shuffle=True, num_workers=workers,
                        drop_last=True, persistent_workers=workers > 0, pin_memory=device.type == "cuda")
    fmt = torch.channels_last if bf16_cl else torch.contiguous_format
    model = model.to(memory_format=fmt)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if bf16_cl else contextlib.nullcontext
    model.train()
    it = iter(loader)
    x, y = next(it)  # warm-up: workers started, first batch
    t_data = t_total = 0.0
    for _ in range(steps):
        t0 = time.perf_counter()
        try:
            x, y = next(it)
        except StopIteration:
            it = iter(loader)
            x, y = next(it)
        x, y = x.to(device, non_blocking=True, memory_format=fmt), y.to(device, non_blocking=True)
        t1 = time.perf_counter()
        with autocast():
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        _sync(device)
        t2 = time.perf_counter()
        t_data += t1 - t0
        t_total += t2 - t0
    return {"images_per_s": steps * batch / t_total, "augment_share": t_data / t_total}


def rolekd_steps(trainer: Trainer, steps: int, device: torch.device) -> dict[str, float]:
    """Time the Trainer's own epoch loop after a warm-up epoch, and separately its augmentation; ``compile_s``
    is the warm-up epoch's extra time over a steady one (with ``train.compile``: the compile time)."""
    cfg = trainer.cfg
    t0 = time.perf_counter()
    trainer.train_epoch()  # warm-up epoch (short: the set holds steps+1 batches)
    _sync(device)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    trainer.train_epoch()
    _sync(device)
    total = time.perf_counter() - t0
    n = trainer.steps_per_epoch * cfg.batch_size
    gen = torch.Generator(device=device).manual_seed(0)
    ctx = AugmentContext(0, cfg.epochs, gen, trainer.normalizer.fill, models=trainer.context_models,
                         normalize=trainer.normalizer)
    idx = torch.arange(cfg.batch_size, device=device)
    batch = Batch(trainer.train_set.images[idx], trainer.train_set.labels[idx])
    _sync(device)
    t1 = time.perf_counter()
    for _ in range(trainer.steps_per_epoch):
        trainer.augment(batch, ctx)
    _sync(device)
    aug = time.perf_counter() - t1
    return {"images_per_s": n / total, "augment_share": aug / total, "compile_s": max(first - total, 0.0)}


def _tile(data: ImageSet, n: int) -> ImageSet:
    """``n`` images from the benchmark's set, repeated as needed (timing only: content does not matter)."""
    idx = torch.arange(n, device=data.device) % len(data)
    return ImageSet(data.images[idx], data.labels[idx])


@dataclass
class Setup:
    """What every rolekd path shares: the data on the device, the augmenters, the recipes, a model builder."""

    build: Callable[[], torch.nn.Module]
    data: ImageSet
    norm: Normalizer
    augs: list[Augmenter]
    teacher_cfg: TrainConfig
    student_cfg: TrainConfig
    device: torch.device
    steps: int

    def student(self) -> torch.nn.Module:
        """A DoReFa W/A 2/2 student of the benchmark's architecture."""
        net = self.build()
        quantize_model(net, 2, 2)
        return net

    def measure(self, key: str, name: str, trainer: Trainer) -> Row:
        r = rolekd_steps(trainer, self.steps, self.device)
        return Row(key, name, r["images_per_s"], r["augment_share"],
                   r["compile_s"] if trainer.cfg.compile else None)


def teacher_name(compile_: bool) -> str:
    return "(b) rolekd teacher step (CE)" + (", train.compile on" if compile_ else "")


def teacher_row(s: Setup, compile_: bool) -> Row:
    cfg = s.teacher_cfg.model_copy(update={"compile": compile_})
    return s.measure("teacher_compiled" if compile_ else "teacher", teacher_name(compile_),
                     Trainer(s.build(), s.data, None, CrossEntropy(), s.augs, cfg, s.norm))


def plain_student_row(s: Setup) -> Row:
    t = Trainer(s.student(), s.data, None, CrossEntropy(), s.augs, s.student_cfg, s.norm)
    return s.measure("student_plain", "(b) rolekd plain student step (CE, W/A 2/2)", t)


def kd_row(s: Setup, teacher: torch.nn.Module, clip: bool) -> Row:
    student = s.student()
    section = DistillConfig(method="iikd", clip_grad=clip).model_dump(exclude={"init_epochs"})
    obj = build_objective(section, teacher, student)
    obj.initialize([s.data.images[: s.student_cfg.batch_size]] * 2, s.norm)  # MHGD's attention network (not timed)
    t = Trainer(student, s.data, None, obj, s.augs, s.student_cfg, s.norm, context_models={"teacher": teacher})
    name = f"(b) rolekd KD student step (II-KD, W/A 2/2, KD clipping {'on' if clip else 'off'})"
    return s.measure(f"student_iikd_{'clip' if clip else 'noclip'}", name, t)


def trial_row(s: Setup, n_trial: int) -> Row:
    """One search trial's epoch: the teacher recipe on the reduced split, evaluation on its validation set."""
    t = Trainer(s.build(), _tile(s.data, n_trial), _tile(s.data, n_trial // 2), CrossEntropy(), s.augs,
                s.teacher_cfg, s.norm)
    t.train_epoch()  # warm-up
    _sync(s.device)
    t0 = time.perf_counter()
    t.train_epoch()
    t.evaluate(batch_size=1000)
    _sync(s.device)
    trial_s = time.perf_counter() - t0
    name = f"(b) one search-trial epoch ({n_trial} train + {n_trial // 2} val images, wall {trial_s:.1f} s)"
    return Row("trial", name, (t.steps_per_epoch * s.teacher_cfg.batch_size) / trial_s)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--trial-images", type=int, default=None, help="reduced split size (default: 4000 on cuda, 1000 on cpu)")
    ap.add_argument("--reference-bf16", action="store_true",
                    help="also the reference with bf16 autocast + channels_last (row a')")
    ap.add_argument("--plain-student", action="store_true",
                    help="also the W/A 2/2 student's plain CE step (what the II-KD step is compared with)")
    ap.add_argument("--kd-clip", choices=("on", "off", "both"), default="on",
                    help="II-KD's KD-gradient clipping in the KD student step (default on: the paper's)")
    ap.add_argument("--compile", choices=("off", "both"), default="off",
                    help="both: also the teacher step with train.compile (compile time reported apart)")
    ap.add_argument("--compile-skipped", metavar="REASON", default=None,
                    help="with --compile both: list the compiled row as 'skipped: REASON' instead of measuring it")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    args.trial_images = args.trial_images or (4000 if cuda else 1000)
    torch.manual_seed(0)
    random.seed(0)
    np.random.seed(0)
    n = args.batch * (args.steps + 1)
    images = synthetic_images(n)
    labels = np.random.default_rng(0).integers(0, 10, n)
    policy = Policy.from_pba_list(LATE_POLICY_PBA)
    build = lambda: build_model(args.model, 10, width=args.width).to(device)  # noqa: E731
    data = ImageSet(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(labels)).to(device)
    tc = TrainConfig(epochs=2, batch_size=args.batch, lr=0.01, amp=cuda, channels_last=cuda)
    stc = TrainConfig(epochs=2, batch_size=args.batch, optimizer="adam", lr=1e-3, weight_decay=1e-5, amp=cuda,
                      channels_last=cuda)
    s = Setup(build, data, Normalizer(MEAN, STD), [PolicyAugmenter(policy), BaselineAugmenter(4, True, 0)], tc, stc,
              device, args.steps)

    fast = resolve_fast_path(tc, device)
    print(f"\nmachine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"device {device}{' (' + torch.cuda.get_device_name() + ')' if cuda else ''}, torch {torch.__version__}")
    print(f"model {args.model} (width {args.width}), batch {args.batch}, {args.steps} steps, {args.workers} workers; "
          f"rolekd's fast path: bf16 autocast {'on' if fast.amp else 'off'}, channels_last "
          f"{'on' if fast.channels_last else 'off'}\n")
    print(TABLE_HEAD, flush=True)
    ref = reference(build(), images, labels, policy, args.batch, args.steps, args.workers, device)
    base = ref["images_per_s"]
    Row("reference", "(a) PyTorch reference: PIL policy+crop+flip, DataLoader", **ref).emit(base)
    if args.reference_bf16:
        r = reference(build(), images, labels, policy, args.batch, args.steps, args.workers, device, bf16_cl=True)
        Row("reference_bf16_cl", "(a') PyTorch reference + bf16 autocast + channels_last", **r).emit(base)
    teacher_row(s, False).emit(base)
    if args.plain_student:
        plain_student_row(s).emit(base)
    teacher = build().eval().requires_grad_(False)
    for clip in {"on": (True,), "off": (False,), "both": (True, False)}[args.kd_clip]:
        kd_row(s, teacher, clip).emit(base)
    trial_row(s, args.trial_images).emit(base)
    if args.compile == "both":  # last: the slowest row, and the one most likely to fail
        if args.compile_skipped:
            Row("teacher_compiled", teacher_name(True), skipped=args.compile_skipped).emit(base)
        else:
            teacher_row(s, True).emit(base)


if __name__ == "__main__":
    main()
