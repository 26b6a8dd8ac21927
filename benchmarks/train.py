"""Benchmark: a training step through rolekd vs a standard PyTorch CIFAR pipeline, same machine, same run.

Not a test. Measures images/s and the share of step time spent augmenting for

  (a) the reference: a torchvision-style Dataset over uint8 arrays with per-image PIL transforms
      (the same PBA-style late-epoch policy as benchmarks/augment.py, random crop with 4-px padding,
      horizontal flip, ToTensor, Normalize) + ``DataLoader`` with workers + a plain training loop;
  (b) rolekd: data resident on the device, the policy and crop/flip batched on the device, the one
      training loop (``Trainer``) — for the teacher step (CE), the KD student step (II-KD, 2-bit
      student) and one search trial's epoch on a reduced split.

    python benchmarks/train.py [--model resnet18] [--batch 128] [--steps 20] [--workers 2]

On CPU a ResNet-18 step is slow; ``--model resnet8 --width 16`` gives a quicker table.
"""

from __future__ import annotations

import argparse
import platform
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).parent))
from augment import LATE_POLICY_PBA, _pil_policy, synthetic_images  # noqa: E402  (the same PIL reference)

from rolekd.agents.policy import PolicyAugmenter  # noqa: E402
from rolekd.augment.base import AugmentContext, Batch  # noqa: E402
from rolekd.augment.baseline import BaselineAugmenter  # noqa: E402
from rolekd.augment.policy import Policy  # noqa: E402
from rolekd.config import DistillConfig, TrainConfig  # noqa: E402
from rolekd.data import ImageSet, Normalizer  # noqa: E402
from rolekd.kd import build_objective  # noqa: E402
from rolekd.models import build_model  # noqa: E402
from rolekd.quant import quantize_model  # noqa: E402
from rolekd.training import CrossEntropy, Trainer  # noqa: E402

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


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


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def reference(model, images, labels, policy, batch, steps, workers, device) -> dict[str, float]:
    loader = DataLoader(PilCifar(images, labels, policy), batch_size=batch, shuffle=True, num_workers=workers,
                        drop_last=True, persistent_workers=workers > 0, pin_memory=device.type == "cuda")
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
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
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        t1 = time.perf_counter()
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
    """Time ``steps`` steps of the Trainer's own epoch loop, and separately its augmentation."""
    cfg = trainer.cfg
    trainer.train_epoch()  # warm-up epoch (short: the set holds steps+1 batches)
    _sync(device)
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
    return {"images_per_s": n / total, "augment_share": aug / total}


def _tile(data: ImageSet, n: int) -> ImageSet:
    """``n`` images from the benchmark's set, repeated as needed (timing only: content does not matter)."""
    idx = torch.arange(n, device=data.device) % len(data)
    return ImageSet(data.images[idx], data.labels[idx])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--trial-images", type=int, default=None, help="reduced split size (default: 4000 on cuda, 1000 on cpu)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    args.trial_images = args.trial_images or (4000 if device.type == "cuda" else 1000)
    torch.manual_seed(0)
    random.seed(0)
    np.random.seed(0)
    n = args.batch * (args.steps + 1)
    images = synthetic_images(n)
    labels = np.random.default_rng(0).integers(0, 10, n)
    policy = Policy.from_pba_list(LATE_POLICY_PBA)
    build = lambda: build_model(args.model, 10, width=args.width).to(device)  # noqa: E731

    rows = []
    ref = reference(build(), images, labels, policy, args.batch, args.steps, args.workers, device)
    rows.append(("(a) PyTorch reference: PIL policy+crop+flip, DataLoader", ref))

    data = ImageSet(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(labels)).to(device)
    norm = Normalizer(MEAN, STD)
    cuda = device.type == "cuda"
    tc = TrainConfig(epochs=2, batch_size=args.batch, lr=0.01, amp=cuda, channels_last=cuda)
    augs = [PolicyAugmenter(policy), BaselineAugmenter(4, True, 0)]
    t = Trainer(build(), data, None, CrossEntropy(), augs, tc, norm)
    rows.append(("(b) rolekd teacher step (CE)", rolekd_steps(t, args.steps, device)))

    teacher = build().eval().requires_grad_(False)
    student = build()
    quantize_model(student, 2, 2)
    stc = TrainConfig(epochs=2, batch_size=args.batch, optimizer="adam", lr=1e-3, weight_decay=1e-5, amp=cuda,
                      channels_last=cuda)
    obj = build_objective(DistillConfig(method="iikd").model_dump(exclude={"init_epochs"}), teacher, student)
    obj.initialize([data.images[: args.batch]] * 2, norm)  # MHGD's attention network (not timed)
    t = Trainer(student, data, None, obj, augs, stc, norm, context_models={"teacher": teacher})
    rows.append(("(b) rolekd KD student step (II-KD, W/A 2/2)", rolekd_steps(t, args.steps, device)))

    # one search trial's epoch: the teacher recipe on the reduced split, evaluation on its validation set
    n_trial = args.trial_images
    trial_train, trial_val = _tile(data, n_trial), _tile(data, n_trial // 2)
    t = Trainer(build(), trial_train, trial_val, CrossEntropy(), augs, tc, norm)
    t.train_epoch()  # warm-up
    _sync(device)
    t0 = time.perf_counter()
    t.train_epoch()
    t.evaluate(batch_size=1000)
    _sync(device)
    trial_s = time.perf_counter() - t0
    rows.append((f"(b) one search-trial epoch ({n_trial} train + {n_trial // 2} val images, wall {trial_s:.1f} s)",
                 {"images_per_s": (t.steps_per_epoch * args.batch) / trial_s, "augment_share": float("nan")}))

    base = rows[0][1]["images_per_s"]
    print(f"\nmachine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"device {device}{' (' + torch.cuda.get_device_name() + ')' if cuda else ''}, torch {torch.__version__}")
    print(f"model {args.model} (width {args.width}), batch {args.batch}, {args.steps} steps, {args.workers} workers\n")
    print("| path | images/s | vs (a) | CIFAR-10 epoch, 50k images (s) | augmentation share of step |")
    print("|---|---:|---:|---:|---:|")
    for name, r in rows:
        share = "–" if r["augment_share"] != r["augment_share"] else f"{100 * r['augment_share']:.1f} %"
        print(f"| {name} | {r['images_per_s']:.0f} | {r['images_per_s'] / base:.2f}x | {50000 / r['images_per_s']:.0f} "
              f"| {share} |")


if __name__ == "__main__":
    main()
