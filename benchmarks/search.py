"""Benchmark: a PBA search through Ray vs the same epochs back to back in one process.

Not a test. Runs a population of N trials x E epochs with ``rolekd.pba.run_search`` (generational
PBT, exploits, per-generation states, Ray's object store) and the same N*E epochs of the same trials in one
process (``Trainer.train_epoch`` + ``evaluate``, no Ray), on the same data and machine, and reports

  * the Ray overhead ratio = Ray wall time / back-to-back wall time, with and without starting Ray;
  * the mean training-epoch time inside Ray trials vs back to back (an epoch's own cost; a search's wall time also
    holds evaluation at generation ends, states and barriers);
  * trials/hour and trial-epochs/hour on a GPU when one is available (all N trials share it).

Every trial and the back-to-back run use one CPU thread. Two Ray layouts on CPU: ``serial`` (Ray
gets one CPU, so one trial runs at a time: the same compute as back to back, and the ratio is pure
Ray overhead) and ``parallel`` (Ray gets every CPU, one trial per CPU).

    python benchmarks/search.py [--population 4] [--epochs 6] [--model resnet8 --width 8]
                                [--dataset digits | cifar10 --data-dir DIR] [--train 1000 --val 400]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from rolekd.config import ExperimentConfig, config_from_dict
from rolekd.pipeline.search_stage import make_trial_trainer, search_args
from rolekd.pipeline.setup import prepare
from rolekd.pba import run_search


def make_config(a: argparse.Namespace, device: str) -> ExperimentConfig:
    return config_from_dict({
        "device": device,
        "data": {"dataset": a.dataset, "reduced_train": a.train, "reduced_val": a.val, "eval_batch_size": 500},
        "teacher": {"model": a.model, "model_args": {"width": a.width},
                    "train": {"epochs": a.epochs, "batch_size": a.batch, "lr": 0.05, "lr_schedule": "cosine"}},
        "search": {"population": a.population, "epochs": a.epochs, "perturbation_interval": a.interval},
    })


def back_to_back(args: dict, population: int, epochs: int) -> dict[str, float]:
    """The population's N*E epochs in this process, trial after trial."""
    epoch_s = []
    t0 = time.perf_counter()
    for i in range(population):
        parts = make_trial_trainer(args, i)
        for _ in range(epochs):
            t = time.perf_counter()
            parts.trainer.train_epoch()
            parts.trainer.evaluate(batch_size=parts.eval_batch_size)
            epoch_s.append(time.perf_counter() - t)
    return {"wall_s": time.perf_counter() - t0, "epoch_s": statistics.mean(epoch_s)}


def through_ray(args: dict, cfg: ExperimentConfig, concurrent: int | None, gpus_per_trial: float = 0.0) -> dict[str, float]:
    search_cfg = cfg.search.model_copy(update={"max_concurrent": concurrent, "gpus_per_trial": gpus_per_trial})
    with tempfile.TemporaryDirectory() as tmp:
        run_search(make_trial_trainer, args, search_cfg, tmp, use_gpu=gpus_per_trial > 0, progress=False)
        summary = json.loads((Path(tmp) / "search_summary.json").read_text())
        rows = [json.loads(line) for f in Path(tmp, "trials").glob("*/progress.jsonl")
                for line in f.read_text().splitlines()]
    return {"wall_s": summary["wall_time_s"], "ray_start_s": summary["ray_start_s"], "exploits": summary["exploits"],
            "epoch_s": statistics.mean(r["epoch_time_s"] for r in rows)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--population", type=int, default=4)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--interval", type=int, default=2)
    p.add_argument("--model", default="resnet8")
    p.add_argument("--width", type=int, default=8)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--dataset", default="digits")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--train", type=int, default=1000)
    p.add_argument("--val", type=int, default=300)
    a = p.parse_args()

    cpus = os.cpu_count() or 1
    torch.set_num_threads(1)  # as in a 1-CPU Ray trial (Ray sets OMP_NUM_THREADS to the trial's CPUs)
    n, e = a.population, a.epochs
    print(f"# search benchmark: {n} trials x {e} epochs, {a.model} width {a.width}, {a.dataset} "
          f"{a.train}/{a.val}, {platform.processor() or platform.machine()} x{cpus} CPUs, torch {torch.__version__}")
    cfg = make_config(a, "cpu")
    args = search_args(cfg, "teacher", prepare(cfg, a.data_dir, device=torch.device("cpu")), None)
    make_trial_trainer(args, 0)  # pay the one-off imports before timing anything
    base = back_to_back(args, n, e)
    print("| run | wall (s) | of which starting Ray (s) | ratio to back to back | ratio without Ray start | s/epoch | exploits |")
    print("|---|---|---|---|---|---|---|")
    print(f"| back to back, one process | {base['wall_s']:.1f} | - | 1.00 | 1.00 | {base['epoch_s']:.2f} | - |")
    for layout, concurrent in (("serial", 1), ("parallel", None)):
        r = through_ray(args, cfg, concurrent)
        trials_at_once = 1 if concurrent else cpus
        print(f"| Ray {layout} ({trials_at_once} trial(s) at a time) | {r['wall_s']:.1f} | {r['ray_start_s']:.1f} | "
              f"{r['wall_s'] / base['wall_s']:.2f} | {(r['wall_s'] - r['ray_start_s']) / base['wall_s']:.2f} | "
              f"{r['epoch_s']:.2f} | {r['exploits']} |")
    if not torch.cuda.is_available():
        print("no GPU here: trials/hour on a GPU not measured")
        return
    cfg = make_config(a, "cuda")
    args = search_args(cfg, "teacher", prepare(cfg, a.data_dir, device=torch.device("cpu")), None)
    r = through_ray(args, cfg, None, 1.0 / n)
    hours = (r["wall_s"] - r["ray_start_s"]) / 3600
    print(f"GPU ({torch.cuda.get_device_name()}), {n} trials sharing it: {r['wall_s']:.1f} s "
          f"({r['ray_start_s']:.1f} s starting Ray), {n / hours:.0f} trials/hour of {e} epochs, "
          f"{n * e / hours:.0f} trial-epochs/hour, {r['epoch_s']:.2f} s/epoch in trial")


if __name__ == "__main__":
    sys.exit(main())
