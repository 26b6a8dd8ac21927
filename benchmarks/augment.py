"""Benchmark: PBA policy application, per image with Pillow vs batched with rolekd.

Not a test. Measures, in one run on the same machine and the same images:

  (a)  Pillow, per image, the way PBA / role-kd apply a policy (``apply_policy`` in
       ``pba/augmentation_transforms_hp.py``: draw a count, shuffle the 30 entries, walk them,
       one Pillow call per fired op), uint8 RGB in and out;
  (a') the same plus PBA's own ``pil_wrap`` / ``pil_unwrap`` (normalised float <-> RGBA), for
       information: this is what PBA's training loop actually pays per image;
  (b)  ``rolekd.augment.apply_policy`` on the whole batch on CPU;
  (c)  the same on CUDA, when available.

Images/s for each and the ratios to (a). The policy is the last policy of PBA's shipped
reduced-CIFAR-10 schedule (``schedules/rcifar10_16_wrn.txt``, epochs 195-199), sum of
probabilities 14.9, as in late epochs of PBA's schedules. Images are synthetic 32x32 (noise,
gradients, blocks) so no download is needed; op cost does not depend on content much.

    PYTHONPATH=src python benchmarks/augment.py [--batch 512] [--repeats 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import copy
import os
import random
import statistics
import time

import numpy as np
import torch
from PIL import Image

from rolekd.augment.ops import OP_NAMES
from rolekd.augment.pil_reference import CIFAR10_MEAN, CIFAR10_STD, COLOUR_OPS, FILL, pil_op
from rolekd.augment.policy import Policy, apply_policy

# Final policy of arcelien/pba schedules/rcifar10_16_wrn.txt (PBA's 60-int encoding, py2 order).
LATE_POLICY_PBA = [
    0, 6, 6, 6, 10, 0, 3, 4, 5, 8, 0, 9, 7, 3, 0, 6, 0, 2, 10, 5, 10, 2, 10, 6, 10, 9, 0, 8, 10, 7,
    2, 7, 8, 6, 6, 7, 10, 3, 9, 4, 0, 8, 0, 1, 5, 0, 8, 7, 3, 3, 2, 3, 0, 8, 3, 3, 5, 2, 7, 6,
]  # fmt: skip


def synthetic_images(n: int, seed: int = 0) -> np.ndarray:
    """(n, 32, 32, 3) uint8: a mix of noise, colour gradients and flat blocks."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:32, 0:32]
    out = rng.integers(0, 256, (n, 32, 32, 3)).astype(np.float64)
    grad = (xx + yy)[None, ..., None] * rng.uniform(1, 4, (n, 1, 1, 3)) + rng.uniform(0, 60, (n, 1, 1, 3))
    out[1::3] = grad[1::3]
    out[2::3, 8:24, 8:24] = rng.integers(0, 256, (len(out[2::3]), 1, 1, 3))
    return np.clip(out, 0, 255).astype(np.uint8)


# ---------------------------------------------------------------- (a) per-image Pillow, PBA style


def _pil_op(img: Image.Image, name: str, level: int) -> Image.Image:
    """One PBA op on an RGB image (``rolekd.augment.pil_reference``), fill = dataset mean; the
    sign and Cutout's centre drawn as PBA does (``random`` / ``np.random``)."""
    if name in COLOUR_OPS:
        return pil_op(img, name, level)
    sign = -1 if random.random() > 0.5 else 1
    center = (0, 0)
    if name == "Cutout" and int(level * 20 / 10) > 0:
        center = (np.random.randint(0, 32), np.random.randint(0, 32))  # (row, col)
    return pil_op(img, name, level, sign, center, FILL)


def _pil_policy(img: Image.Image, triples: list[tuple[str, float, int]]) -> Image.Image:
    count = np.random.choice([0, 1, 2, 3], p=[0.2, 0.3, 0.5, 0.0])
    if count == 0:
        return img
    policy = copy.copy(triples)
    random.shuffle(policy)
    for name, prob, level in policy:
        if random.random() < prob:
            img = _pil_op(img, name, level)
            count -= 1
            if count == 0:
                break
    return img


def run_pillow(images: np.ndarray, policy: Policy, pba_wrap: bool) -> np.ndarray:
    triples = [(e.op, e.prob / 10, e.mag) for e in policy.entries]
    mean, std = np.array(CIFAR10_MEAN), np.array(CIFAR10_STD)
    out = np.empty_like(images)
    if not pba_wrap:
        for i, arr in enumerate(images):
            out[i] = np.asarray(_pil_policy(Image.fromarray(arr), triples))
        return out
    normalised = (images / 255.0 - mean) / std
    for i, x in enumerate(normalised):  # pil_wrap -> policy -> pil_unwrap, as PBA's next_batch does
        pil = Image.fromarray(np.uint8((x * std + mean) * 255.0)).convert("RGBA")
        pil = _pil_policy(pil.convert("RGB"), triples).convert("RGBA")
        arr = np.asarray(pil, dtype=np.float64).reshape((32, 32, 4)) / 255.0  # PBA: np.array(getdata())
        out[i] = np.uint8(np.clip(arr[:, :, :3], 0, 1) * 255)
    return out


# ---------------------------------------------------------------- timing


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads for (b) (default: torch's)")
    ap.add_argument("--skip-wrap", action="store_true", help="skip (a'), PBA's wrap/unwrap variant")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    policy = Policy.from_pba_list(LATE_POLICY_PBA)
    n = args.batch
    images = synthetic_images(n)
    batch = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    random.seed(0)
    np.random.seed(0)
    gen = torch.Generator().manual_seed(0)

    # name -> (images per call, function, synchronise); run interleaved, round-robin, so a
    # machine whose load changes during the run affects every method alike.
    methods: dict[str, tuple[int, object, object]] = {
        "(a)  Pillow per image (PBA's apply_policy loop)": (n, lambda: run_pillow(images, policy, False), None),
    }
    if not args.skip_wrap:
        methods["(a') (a) + PBA's pil_wrap/pil_unwrap"] = (n, lambda: run_pillow(images, policy, True), None)
    methods[f"(b)  rolekd batched, CPU, {torch.get_num_threads()} thread(s)"] = (
        n, lambda: apply_policy(batch, policy, gen, FILL), None)
    if torch.cuda.is_available():
        dev = torch.device("cuda")
        gpu_batch = batch.to(dev)
        big = torch.from_numpy(synthetic_images(8192, seed=1)).permute(0, 3, 1, 2).contiguous().to(dev)
        ggen = torch.Generator(device=dev).manual_seed(0)
        sync = torch.cuda.synchronize
        name = torch.cuda.get_device_name(dev)
        methods[f"(c)  rolekd batched, CUDA ({name})"] = (n, lambda: apply_policy(gpu_batch, policy, ggen, FILL), sync)
        methods["(c') rolekd batched, CUDA, batch 8192"] = (8192, lambda: apply_policy(big, policy, ggen, FILL), sync)

    wall: dict[str, list[float]] = {k: [] for k in methods}
    cpu: dict[str, list[float]] = {k: [] for k in methods}
    for _, fn, sync in methods.values():  # warm-up
        fn()
        if sync:
            sync()
    load_before = os.getloadavg()[0]
    for _ in range(args.repeats):
        for key, (_, fn, sync) in methods.items():
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            if sync:
                sync()
            wall[key].append(time.perf_counter() - t0)
            cpu[key].append(time.process_time() - c0)

    rate = {k: methods[k][0] / statistics.median(v) for k, v in wall.items()}
    cpu_rate = {k: methods[k][0] / max(statistics.median(v), 1e-9) for k, v in cpu.items()}
    base, cpu_base = next(iter(rate.values())), next(iter(cpu_rate.values()))
    print(f"policy: final policy of PBA's rcifar10_16_wrn schedule, sum p = {policy.prob_sum:.1f}")
    print(f"batch {n} of 32x32 RGB, median of {args.repeats} interleaved runs; {os.cpu_count()} CPUs, "
          f"load average {load_before:.1f} -> {os.getloadavg()[0]:.1f}; torch {torch.__version__}, "
          f"Pillow {Image.__version__}")
    print("CPU-time rate = images / process CPU seconds (all threads); robust to other processes on the machine")
    print(f"| {'method':<50} | {'images/s':>9} | {'vs (a)':>6} | {'CPU-time rate':>13} | {'vs (a)':>6} |")
    print(f"|{'-' * 52}|{'-' * 11}|{'-' * 8}|{'-' * 15}|{'-' * 8}|")
    for key, ips in rate.items():
        c = cpu_rate[key]
        print(f"| {key:<50} | {ips:>9,.0f} | {ips / base:>5.1f}x | {c:>13,.0f} | {c / cpu_base:>5.1f}x |")
    assert set(OP_NAMES) == {e.op for e in policy.entries}


if __name__ == "__main__":
    main()
