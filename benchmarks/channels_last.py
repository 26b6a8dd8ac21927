"""Benchmark: rolekd's own training steps on the CPU in the default memory format against ``channels_last``.

A bare ResNet-8 step ran 1.2-1.5x faster in channels_last on the project's 2-core VM (issue 26); rolekd turns it
on only with CUDA. This measures it where it matters, in rolekd's ``Trainer``: the teacher step (CE) and the KD
student step (II-KD, DoReFa student warm-started from the teacher, KD-gradient clipping), each with the default
format, with channels_last on the trained network (``train.channels_last``: what the config switch does), and with
channels_last on the teacher that the KD step runs as well. Rounds alternate the variants (A B C A B C ...) so a
load change on the machine hits them alike; the table gives the median images/s and its ratio to the default.

    PYTHONPATH=src python benchmarks/channels_last.py [--model resnet8 --width 16 --bits 4 --batch 128 --steps 8]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from rolekd.augment.baseline import BaselineAugmenter
from rolekd.config import DistillConfig, TrainConfig
from rolekd.data.tensors import ImageSet, Normalizer
from rolekd.kd import build_objective
from rolekd.models import build_model
from rolekd.quant import quantize_model, warm_start
from rolekd.training import CrossEntropy, Trainer

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
VARIANTS = ("default format", "channels_last (train.channels_last)", "channels_last, teacher too")


def images(n: int) -> ImageSet:
    g = torch.Generator().manual_seed(0)
    return ImageSet(torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8),
                    torch.randint(0, 10, (n,), generator=g))


def trainer(role: str, variant: int, args: argparse.Namespace, data: ImageSet) -> Trainer:
    """A fresh Trainer for ``role`` with the variant's memory formats (the same weights in every variant)."""
    torch.manual_seed(0)
    teacher = build_model(args.model, 10, width=args.width)
    layout = {"channels_last": variant > 0}
    norm = Normalizer(MEAN, STD)
    augs = [BaselineAugmenter(4, True, 0)]
    if role == "teacher":
        cfg = TrainConfig(epochs=2, batch_size=args.batch, lr=0.05, **layout)
        return Trainer(teacher, data, None, CrossEntropy(), augs, cfg, norm)
    teacher = teacher.eval().requires_grad_(False)
    if variant == 2:
        teacher = teacher.to(memory_format=torch.channels_last)
    student = build_model(args.model, 10, width=args.width)
    quantize_model(student, args.bits, args.bits)
    warm_start(student, teacher.state_dict())
    objective = build_objective(DistillConfig(method="iikd").model_dump(exclude={"init_epochs"}), teacher, student)
    objective.initialize([data.images[: args.batch]] * 2, norm)  # MHGD's attention network (not timed)
    cfg = TrainConfig(epochs=2, batch_size=args.batch, optimizer="adam", lr=1e-3, weight_decay=1e-5, **layout)
    return Trainer(student, data, None, objective, augs, cfg, norm, context_models={"teacher": teacher})


def epoch_rate(t: Trainer) -> float:
    """Images per second over one epoch of the Trainer's own loop."""
    t0 = time.perf_counter()
    t.train_epoch()
    return t.steps_per_epoch * t.cfg.batch_size / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet8")
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--bits", type=int, default=4, help="the KD student's W/A")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=8, help="steps per timed epoch")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    data = images(args.batch * args.steps)
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, cpu, "
          f"torch {torch.__version__}; {args.model} width {args.width}, batch {args.batch}, {args.steps} steps per "
          f"epoch, {args.rounds} alternating rounds, median\n")
    print("| step | memory format | images/s | × default |\n|---|---|---:|---:|")
    for role, variants in (("teacher", (0, 1)), ("student", (0, 1, 2))):
        trainers = {v: trainer(role, v, args, data) for v in variants}
        for t in trainers.values():
            t.train_epoch()  # warm-up (allocator, first-call paths)
        rates: dict[int, list[float]] = {v: [] for v in variants}
        for _ in range(args.rounds):
            for v, t in trainers.items():
                rates[v].append(epoch_rate(t))
        base = statistics.median(rates[0])
        step = "teacher (CE)" if role == "teacher" else f"KD student (II-KD, W/A {args.bits}/{args.bits})"
        for v in variants:
            rate = statistics.median(rates[v])
            print(f"| {step} | {VARIANTS[v]} | {rate:.0f} | {rate / base:.2f} |", flush=True)


if __name__ == "__main__":
    main()
