"""DoReFa cost and size: ResNet-18 training-step time at W/A = 4/4 and 2/2 vs full precision, and packed size vs fp32.

    PYTHONPATH=src python benchmarks/quant.py            # CPU: batch 64; CUDA (if available): batch 128
    PYTHONPATH=src python benchmarks/quant.py --steps 10 --warmup 3

Each configuration gets a fresh model and ``--warmup`` untimed steps; then ``--steps`` SGD steps (forward, backward,
update on one random CIFAR-sized batch) are timed round-robin across the configurations and the median is reported.
"eval fwd" is the median no-grad forward in eval mode, where the quantised weights come from the cache.
Sizes are files on disk: ``torch.save(state_dict)`` vs :func:`rolekd.quant.export_packed`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from rolekd.models import build_model
from rolekd.quant import export_packed, quantize_model

CONFIGS = [(32, 32), (4, 4), (2, 2)]
NUM_CLASSES = 100


def _interleaved_medians(
    fns: dict[tuple[int, int], Callable[[], None]], warmup: int, steps: int, device: torch.device
) -> dict[tuple[int, int], float]:
    """Median seconds per call of each fn, timed round-robin so a load change on a shared machine hits all alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[tuple[int, int], list[float]] = {key: [] for key in fns}
    for _ in range(steps):
        for key, fn in fns.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[key].append(time.perf_counter() - start)
    return {key: statistics.median(t) for key, t in times.items()}


def _train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, nesterov=True)

    def step() -> None:
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def _eval_forward(model: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    def forward() -> None:
        with torch.no_grad():
            model(x)

    return forward


def _sizes(model: nn.Module, w: int, a: int, width: int, tmp: str) -> tuple[int, int]:
    fp32_path, packed_path = os.path.join(tmp, f"fp32_{w}_{a}.pt"), os.path.join(tmp, f"packed_{w}_{a}.pt")
    torch.save(model.state_dict(), fp32_path)
    meta = {"model": "resnet18", "num_classes": NUM_CLASSES, "model_args": {"width": width}, "w_bits": w, "a_bits": a}
    export_packed(model.cpu(), packed_path, meta)
    return os.path.getsize(fp32_path), os.path.getsize(packed_path)


def run(steps: int, warmup: int, batch: int, width: int, device: torch.device) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, 32, 32, generator=g).to(device)
    y = torch.randint(0, NUM_CLASSES, (batch,), generator=g).to(device)
    models = {}
    for w, a in CONFIGS:
        torch.manual_seed(0)
        models[(w, a)] = build_model("resnet18", NUM_CLASSES, width=width)
        quantize_model(models[(w, a)], w, a)
        models[(w, a)].to(device).train()
    train_s = _interleaved_medians({k: _train_step(m, x, y) for k, m in models.items()}, warmup, steps, device)
    for m in models.values():
        m.eval()
    eval_s = _interleaved_medians({k: _eval_forward(m, x) for k, m in models.items()}, warmup, steps, device)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for (w, a), model in models.items():
            fp32_bytes, packed_bytes = _sizes(model, w, a, width, tmp)
            times = {"train_s": train_s[(w, a)], "eval_s": eval_s[(w, a)]}
            rows.append({"w": w, "a": a, **times, "fp32": fp32_bytes, "packed": packed_bytes})
    return rows


def table(rows: list[dict]) -> str:
    base_train, base_eval = rows[0]["train_s"], rows[0]["eval_s"]
    lines = [
        "| W/A | train step (s) | vs fp32 | eval fwd (s) | vs fp32 | fp32 file (MiB) | packed file (MiB) | smaller |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['w']}/{r['a']} | {r['train_s']:.3f} | {r['train_s'] / base_train:.2f}x | {r['eval_s']:.3f} | "
            f"{r['eval_s'] / base_eval:.2f}x | {r['fp32'] / 2**20:.2f} | {r['packed'] / 2**20:.2f} | "
            f"{r['fp32'] / r['packed']:.1f}x |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3, help="timed steps per configuration (median reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--batch", type=int, default=None, help="default: 128 on CUDA, 64 on CPU")
    parser.add_argument("--width", type=int, default=64, help="ResNet-18 base width (64 = the paper's)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    batch = args.batch or (128 if device.type == "cuda" else 64)
    rows = run(args.steps, args.warmup, batch, args.width, device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"ResNet-18 (width {args.width}, {NUM_CLASSES} classes), batch {batch}, {where}, torch {torch.__version__}; "
          f"median of {args.steps} steps after {args.warmup} warm-up")
    print(table(rows))


if __name__ == "__main__":
    main()
