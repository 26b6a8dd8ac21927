"""Step time of each KD objective relative to the plain cross-entropy step.

ResNet-18 student and ResNet-18 teacher (the paper's low-bit setting shares the architecture),
CIFAR-100 shapes, one fixed batch, SGD; a "step" is forward + backward + optimiser step as the
training loop runs it. Usage::

    PYTHONPATH=src python benchmarks/distill.py            # cuda if available, else cpu (batch 32)
    PYTHONPATH=src python benchmarks/distill.py --threads 1   # a shared/loaded CPU box
    PYTHONPATH=src python benchmarks/distill.py --device cuda --batch 128 --steps 20
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch

from rolekd.augment.base import Batch
from rolekd.distill import build_objective
from rolekd.models import build_model
from rolekd.train.objective import StepContext

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=None, help="default: 128 on cuda, 32 on cpu")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (1 is steadier on a shared box)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
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
