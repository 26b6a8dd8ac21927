"""Step time of each KD objective relative to the plain cross-entropy step.

ResNet-18 student and ResNet-18 teacher (the paper's low-bit setting shares the architecture),
CIFAR-100 shapes, one fixed batch, SGD; a "step" is forward + backward + optimiser step as the
training loop runs it. Usage::

    PYTHONPATH=src python benchmarks/distill.py            # cuda if available, else cpu (batch 32)
    PYTHONPATH=src python benchmarks/distill.py --threads 1   # a shared/loaded CPU box
    PYTHONPATH=src python benchmarks/distill.py --device cuda --batch 128 --steps 20

``--grad-ratios`` instead measures how much each II-KD term reaches the update: a teacher briefly
trained on synthetic CIFAR-shaped data (class templates + noise), a DoReFa W/A 2/2 student
warm-started from it, MHGD initialised, one fixed held-out batch, lambda = 0.4, and each term's
gradient norm relative to the task (CE) gradient before and after the per-tensor KD clipping of
training (:func:`rolekd.kd.clip.clip_to_task`), at the warm-up scale of epoch 0 and of a late
epoch (about 1 min for the first, 3-10 min for the second on 2 CPU cores)::

    PYTHONPATH=src python benchmarks/distill.py --grad-ratios --model resnet8 --width 16
    PYTHONPATH=src python benchmarks/distill.py --grad-ratios --model resnet18 --width 64 --classes 100 --teacher-steps 30
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from rolekd.augment.base import Batch
from rolekd.kd import build_objective
from rolekd.kd.clip import clip_to_task, warmup
from rolekd.kd.distiller import KD_PREFIX
from rolekd.models import build_model
from rolekd.quant import quantize_model, warm_start
from rolekd.training.objective import StepContext

# (label, method, the rest of the distill section)
CASES = [
    ("ce (plain step)", "none", {}),
    ("soft", "soft", {}),
    ("dkd", "dkd", {}),
    ("dml (peer trained)", "dml", {}),
    ("dml (frozen peer)", "dml", {"options": {"freeze_peer": True}}),
    ("rkd", "rkd", {}),
    ("kdsvd (clip)", "kdsvd", {}),
    ("mhgd (clip)", "mhgd", {}),
    ("iikd (clip, paper)", "iikd", {}),
    ("iikd (no clip)", "iikd", {"clip_grad": False}),
]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Case:
    """One objective with its own student and teacher copies (DML trains its peer)."""

    def __init__(self, method: str, kwargs: dict, teacher: torch.nn.Module, batch: Batch) -> None:
        self.student = build_model("resnet18", 100).to(batch.images.device)
        section = {"method": method, **kwargs}
        self.objective = build_objective(section, copy.deepcopy(teacher), self.student).to(batch.images.device)
        if hasattr(self.objective, "check"):
            self.objective.check(batch)
            self.objective.initialize([batch.images] * 2)
        self.params = list(self.student.parameters()) + list(self.objective.extra_parameters())
        self.optimizer = torch.optim.SGD(self.params, lr=0.01, momentum=0.9)

    def step(self, batch: Batch, step: int) -> tuple[float, float]:
        """Wall-clock and process-CPU seconds for one training step as the loop runs it."""
        _sync(batch.images.device)
        wall, cpu = time.perf_counter(), time.process_time()
        out = self.objective(self.student, batch, StepContext(0, 200, step, 100))
        self.optimizer.zero_grad()
        self.objective.backward(out, self.params)
        self.optimizer.step()
        _sync(batch.images.device)
        return time.perf_counter() - wall, time.process_time() - cpu


# ---- --grad-ratios: how much each II-KD term reaches the update ----------------------------------

IIKD_TERMS = ("rkd_distance", "rkd_angle", "mhgd", "kdsvd")


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu} ({os.cpu_count()} logical CPUs), {torch.get_num_threads()} torch threads, torch {torch.__version__}"


def _synthetic(n: int, classes: int, templates: torch.Tensor, g: torch.Generator) -> Batch:
    """CIFAR-shaped images a network can learn: a smooth per-class template plus pixel noise."""
    labels = torch.randint(0, classes, (n,), generator=g)
    noise = torch.randn(n, 3, 32, 32, generator=g)
    return Batch(templates[labels] + noise, labels)


def _norm(g: torch.Tensor | None) -> float:
    return 0.0 if g is None else float(g.double().norm())


def _ratio_row(term_grads: list, task_grads: list, factors: list[float] | None) -> tuple[float, float]:
    """(global-norm ratio, median over tensors of the per-tensor ratio) of a term's gradient, times
    each tensor's clip factor when ``factors`` is given, to the task gradient."""
    f = factors or [1.0] * len(task_grads)
    term = [fi * _norm(g) for fi, g in zip(f, term_grads)]
    task = [_norm(g) for g in task_grads]
    total = sum(t * t for t in term) ** 0.5 / sum(t * t for t in task) ** 0.5
    return total, statistics.median(a / b for a, b in zip(term, task))


def grad_ratios(args: argparse.Namespace) -> None:
    device = torch.device(args.device)
    batch_size = args.batch or 128
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    templates = F.interpolate(torch.randn(args.classes, 3, 4, 4, generator=g), size=32, mode="bilinear")
    pool = [_synthetic(batch_size, args.classes, templates, g) for _ in range(8)]
    fixed = _synthetic(batch_size, args.classes, templates, g)
    to_dev = lambda b: Batch(b.images.to(device), b.labels.to(device))  # noqa: E731

    teacher = build_model(args.model, args.classes, width=args.width).to(device)
    t0 = time.perf_counter()
    opt = torch.optim.SGD(teacher.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    teacher.train()
    for step in range(args.teacher_steps):
        b = to_dev(pool[step % len(pool)])
        loss = F.cross_entropy(teacher(b.images), b.labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    teacher.eval()
    batch = to_dev(fixed)
    with torch.no_grad():
        teacher_acc = float((teacher(batch.images).argmax(1) == batch.labels).float().mean())
    teacher_time = time.perf_counter() - t0

    # the stage-beta student: same architecture, DoReFa W/A 2/2, warm-started from the teacher
    student = build_model(args.model, args.classes, width=args.width).to(device)
    quantize_model(student, 2, 2)
    warm_start(student, teacher.state_dict())
    objective = build_objective({"method": "iikd"}, teacher, student).to(device)
    objective.check(batch)
    if args.init_steps:
        objective.initialize([to_dev(pool[i % len(pool)]).images for i in range(args.init_steps)])
    else:
        objective.skip_initialization()  # role-kd: MHGD's attention network left at random initialisation

    student.train()
    out = objective(student, batch, StepContext(0, 200))
    params = [p for p in student.parameters() if p.requires_grad]
    kd_names = [k for k in out.losses if k.startswith(KD_PREFIX)]
    task = torch.stack([v for k, v in out.losses.items() if not k.startswith(KD_PREFIX)]).sum()
    task_grads = torch.autograd.grad(task, params, retain_graph=True, allow_unused=True)
    grads = {
        k[len(KD_PREFIX):]: torch.autograd.grad(out.losses[k], params, retain_graph=True, allow_unused=True)
        for k in kd_names
    }
    grads["sum"] = torch.autograd.grad(torch.stack([out.losses[k] for k in kd_names]).sum(), params, allow_unused=True)
    # tensors the task gradient reaches (the others' KD gradient passes unclipped and has no ratio)
    keep = [i for i, gt in enumerate(task_grads) if _norm(gt) > 0]
    task_grads = [task_grads[i] for i in keep]
    grads = {k: [v[i] for i in keep] for k, v in grads.items()}

    def factors(scale: float) -> list[float]:
        """Per tensor, the factor clip_to_task applies to the combined KD gradient (float64 so the
        subtraction of the task gradient loses nothing)."""
        result = []
        for gt, gk in zip(task_grads, grads["sum"]):
            if gk is None or _norm(gk) == 0:
                result.append(1.0)
                continue
            clipped = clip_to_task(gt.double(), gk.double(), scale) - gt.double()
            result.append(_norm(clipped) / _norm(gk))
        return result

    scales = {0: warmup(0), args.late_epoch: warmup(args.late_epoch)}
    clip = {e: factors(s) for e, s in scales.items()}

    print(f"machine: {_machine()}, device {device}")
    print(f"command: python {' '.join(sys.argv)}")
    print(
        f"{args.model} width {args.width}, {args.classes} classes, batch {batch_size} (synthetic CIFAR-shaped); "
        f"teacher: {args.teacher_steps} SGD steps ({teacher_time:.0f} s, {100 * teacher_acc:.0f}% on the batch); "
        f"student: DoReFa W/A 2/2 warm-started from it; II-KD lambda {objective.lam}, MHGD initialised "
        f"{args.init_steps} steps; {len(task_grads)} parameter tensors with a task gradient"
    )
    print(f"CE = {float(out.losses['ce'].detach()):.4f}; lambda * term: "
          + ", ".join(f"{k[len(KD_PREFIX):]} = {float(out.losses[k].detach()):.4g}" for k in kd_names))
    heads = [f"sigma(epoch {e}) = {s:.2f}" for e, s in scales.items()]
    print("\n||g_term|| / ||g_CE|| (lambda included): global-norm ratio / median of per-tensor ratios\n")
    print(f"| term | before clipping | after clipping, {heads[0]} | after clipping, {heads[1]} |")
    print("|---|---|---|---|")
    for name in (*[t for t in IIKD_TERMS if t in grads], "sum"):
        cells = [_ratio_row(grads[name], task_grads, None)]
        cells += [_ratio_row(grads[name], task_grads, clip[e]) for e in scales]
        print(f"| {name} | " + " | ".join(f"{a:.3g} / {m:.3g}" for a, m in cells) + " |")
    print("\nclip factor on the combined KD gradient, per tensor\n")
    print("| warm-up | tensors clipped | median factor | min factor |")
    print("|---|---|---|---|")
    for head, f in zip(heads, clip.values()):
        print(f"| {head} | {sum(x < 1 for x in f)} / {len(f)} | {statistics.median(f):.3g} | {min(f):.3g} |")


# ---- default: step time of each objective ---------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=None,
                        help="default: 128 on cuda, 32 on cpu (timing); 128 (--grad-ratios, the paper's batch)")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (1 is steadier on a shared box)")
    parser.add_argument("--grad-ratios", action="store_true",
                        help="instead of timing: II-KD terms' gradient norms relative to the task gradient")
    parser.add_argument("--model", default="resnet8", help="--grad-ratios: teacher and student architecture")
    parser.add_argument("--width", type=int, default=16, help="--grad-ratios: the model's base width")
    parser.add_argument("--classes", type=int, default=10, help="--grad-ratios: number of classes")
    parser.add_argument("--teacher-steps", type=int, default=150,
                        help="--grad-ratios: SGD steps training the teacher on the synthetic data")
    parser.add_argument("--init-steps", type=int, default=40, help="--grad-ratios: MHGD initialisation steps (0: untrained, as role-kd)")
    parser.add_argument("--late-epoch", type=int, default=20, help="--grad-ratios: a late epoch (sigma = 1)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.grad_ratios:
        grad_ratios(args)
        return
    device = torch.device(args.device)
    batch_size = args.batch or (128 if device.type == "cuda" else 32)

    torch.manual_seed(0)
    teacher = build_model("resnet18", 100).to(device)
    images = torch.randn(batch_size, 3, 32, 32, device=device)
    batch = Batch(images, torch.randint(0, 100, (batch_size,), device=device))
    cases = {label: Case(method, kwargs, teacher, batch) for label, method, kwargs in CASES}
    # interleaved rounds, each case timed against the plain step of the same round, so that a
    # machine whose load drifts (shared CI boxes) shifts every case alike; on the CPU the process
    # time is also kept, which waiting for a busy core does not inflate
    times: dict[str, list[tuple[float, float]]] = {label: [] for label in cases}
    for step in range(args.warmup + args.steps):
        round_times = {label: case.step(batch, step) for label, case in cases.items()}
        if step >= args.warmup:
            for label, t in round_times.items():
                times[label].append(t)
    plain = times[CASES[0][0]]

    def ratio(label: str, i: int) -> float:
        return statistics.median(t[i] / p[i] for t, p in zip(times[label], plain))

    cpu_cols = device.type == "cpu"
    print(f"device {device} ({torch.get_num_threads()} threads), batch {batch_size}, ResNet-18 -> ResNet-18, "
          f"median of {args.steps} interleaved rounds after {args.warmup} warm-up")
    print("| objective | ms/step | x plain |" + (" CPU ms/step | x plain (CPU time) |" if cpu_cols else ""))
    print("|---|---|---|" + ("---|---|" if cpu_cols else ""))
    for label in cases:
        row = f"| {label} | {1000 * statistics.median(t[0] for t in times[label]):.0f} | {ratio(label, 0):.2f} |"
        if cpu_cols:
            row += f" {1000 * statistics.median(t[1] for t in times[label]):.0f} | {ratio(label, 1):.2f} |"
        print(row)


if __name__ == "__main__":
    main()
