"""Cost of one student step with each augmentation agent, relative to the plain KD step.

A step is what the training loop does per batch: normalise, run the agents (backward-pass samples,
HARD), the soft-label KD objective forward + backward, the optimiser step. Teacher and student are
ResNet-8 (width 16; the student DoReFa W/A = 2/2, the paper's low-bit setting) on CIFAR shapes; one
fixed batch. Cases are timed round-robin so load changes on a shared machine hit them alike; the
mean over the steps (a multiple of 4, so HARD's every-4-steps update is counted at its real rate). Usage::

    PYTHONPATH=src python benchmarks/agents.py                 # cuda if available, else cpu (batch 64)
    PYTHONPATH=src python benchmarks/agents.py --threads 1     # a shared/loaded CPU box
    PYTHONPATH=src python benchmarks/agents.py --device cuda --batch 256 --steps 24
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch

from rolekd.agents import BackwardPassAgent, HardAgent, SpatialAugmentor
from rolekd.config import BackwardAgentConfig, HardAgentConfig
from rolekd.augment.base import AugmentContext, Augmenter, Batch
from rolekd.data import Normalizer
from rolekd.kd import build_objective
from rolekd.models import build_model
from rolekd.quant import quantize_model
from rolekd.training.objective import StepContext, total_loss

class Copies:
    """Appends copies of half the batch: the agents' larger batch without generating anything."""

    space = "input"

    def __call__(self, batch: Batch, ctx: AugmentContext) -> Batch:
        half = len(batch) // 2
        return Batch(torch.cat([batch.images, batch.images[:half]]), torch.cat([batch.labels, batch.labels[:half]]))


CASES: list[tuple[str, Callable[[], list[Augmenter]]]] = [
    ("KD (no agent)", lambda: []),
    ("KD, batch + 50% copies (the agents' batch, nothing generated)", lambda: [Copies()]),
    ("KD + backward, 1 sign step (default)", lambda: [BackwardPassAgent()]),
    ("KD + backward, 3 sign steps", lambda: [BackwardPassAgent(BackwardAgentConfig(steps=3))]),
    ("KD + HARD affine, update every step (default)", lambda: [HardAgent(SpatialAugmentor())]),
    ("KD + HARD affine, update every 4 steps", lambda: [HardAgent(SpatialAugmentor(), HardAgentConfig(update_every=4))]),
]
NORM = Normalizer((0.49, 0.48, 0.45), (0.25, 0.24, 0.26))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Case:
    """One student (own weights and optimiser) with its agents, all sharing the frozen teacher."""

    def __init__(self, agents: list[Augmenter], teacher: torch.nn.Module, device: torch.device) -> None:
        torch.manual_seed(0)
        student = build_model("resnet8", 10, width=16)
        quantize_model(student, 2, 2)
        self.student = student.to(device).train()
        self.objective = build_objective({"method": "soft", "lam": 1.0}, teacher, self.student).to(device)
        self.optimizer = torch.optim.SGD(self.student.parameters(), lr=0.01, momentum=0.9)
        self.agents = agents
        self.models = {"student": self.student, "teacher": teacher}

    def step(self, images: torch.Tensor, labels: torch.Tensor, step: int) -> tuple[float, float, int]:
        """Wall-clock and process-CPU seconds of one training step, and the batch size it trained on."""
        device = images.device
        ctx = AugmentContext(0, 1, torch.Generator(device=device).manual_seed(step), step=step,
                             models=self.models, normalize=NORM)
        _sync(device)
        wall, cpu = time.perf_counter(), time.process_time()
        batch = Batch(NORM(images), labels)
        for agent in self.agents:
            batch = agent(batch, ctx)
        out = self.objective(self.student, batch, StepContext(0, 1, step, 100))
        self.optimizer.zero_grad(set_to_none=True)
        total_loss(out).backward()
        self.optimizer.step()
        _sync(device)
        return time.perf_counter() - wall, time.process_time() - cpu, len(batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (1 is steadier on a shared box)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    teacher = build_model("resnet8", 10, width=16).to(device).eval().requires_grad_(False)
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (args.batch, 3, 32, 32), generator=gen, dtype=torch.uint8).to(device)
    labels = torch.randint(0, 10, (args.batch,), generator=gen).to(device)
    cases = [(label, Case(make(), teacher, device)) for label, make in CASES]
    times: dict[str, list[tuple[float, float, int]]] = {label: [] for label, _ in cases}
    for step in range(args.warmup + args.steps):
        for label, case in cases:
            t = case.step(images, labels, step)
            if step >= args.warmup:
                times[label].append(t)
    wall0 = statistics.fmean(t[0] for t in times[cases[0][0]])
    cpu0 = statistics.fmean(t[1] for t in times[cases[0][0]])
    print(f"device {device}, threads {torch.get_num_threads()}, batch {args.batch}, mean of {args.steps} steps "
          f"after {args.warmup} warm-up, torch {torch.__version__}\n")
    print("| case | samples trained on | step (s) | vs KD | CPU-time step (s) | vs KD |")
    print("|---|---|---|---|---|---|")
    for label, rows in times.items():
        wall, cpu = statistics.fmean(t[0] for t in rows), statistics.fmean(t[1] for t in rows)
        print(f"| {label} | {rows[0][2]} | {wall:.3f} | {wall / wall0:.2f}x | {cpu:.3f} | {cpu / cpu0:.2f}x |")


if __name__ == "__main__":
    main()
