"""Wall time of a small multi-seed `rolekd run` with its trainings one at a time vs several at once (issue 17).

Both runs are the same config on the embedded digits demo, differing only in how many trainings run at once:

- **1 slot**: `pipeline.max_parallel=1`, each training in the rolekd process with all of torch's threads (today's
  sequential run);
- **N slots**: `teacher/student.train.cpus = CPUs / N`, so N trainings run at once as Ray tasks (on the GPU,
  `--device cuda` or a GPU machine's default, also `train.gpus = 1 / N`: N trainings share the one GPU).

The searches are the same in both (stage α is given, so only stage β searches); the table gives the wall time of
the whole run and of its trainings (``timings.json``: the sum of the rows' own wall times is not the phase's
elapsed time when they overlap, so the trainings' elapsed time is the run's minus the search's).

Besides the table, one machine-readable line ``json: {...}`` (``benchmarks/gpu_check.py`` parses it).

    python benchmarks/pipeline.py [--slots 2] [--seeds 3] [--epochs 6] [--device cuda] [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


def run(out: Path, overrides: list[str]) -> dict[str, float]:
    cmd = [sys.executable, "-m", "rolekd.cli.main", "run", "demo", "--out", str(out)]
    for item in overrides:
        cmd += ["--set", item]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        sys.exit(f"rolekd run failed ({' '.join(cmd)}):\n{done.stderr[-3000:]}")
    times = json.loads((out / "timings.json").read_text())
    search = sum(v for k, v in times.items() if k.startswith("stage"))
    report = json.loads((out / "report.json").read_text())
    return {"wall_s": wall, "search_s": search, "trainings_s": wall - search,
            "rows": {r["key"]: r["last_per_seed"] for r in report["rows"]}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--slots", type=int, default=2, help="trainings at once in the parallel run")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=6, help="of every training")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="of every training and the search (auto: cuda where there is one)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="a further config override for both runs (repeatable; wins over the benchmark's own)")
    a = p.parse_args()
    cpus = os.cpu_count() or 1
    gpu = a.device == "cuda" or (a.device == "auto" and torch.cuda.is_available())
    base = [f"teacher.train.epochs={a.epochs}", f"student.train.epochs={a.epochs}", "teacher.model_args.width=8",
            "student.model_args.width=8", "search.population=2", "search.epochs=2", "search.cpus_per_trial=1",
            f"pipeline.seeds={list(range(a.seeds))}", "pipeline.stage_alpha.schedule=pba-rcifar10",
            "pipeline.baselines=[teacher_vanilla,student_kd,student_kd_teacher_schedule]", "distill.method=soft",
            f"device={'cuda' if gpu else 'cpu'}", *a.overrides]
    share = ([f"teacher.train.gpus={1 / a.slots}", f"student.train.gpus={1 / a.slots}"] if gpu else [])
    share += [f"teacher.train.cpus={cpus / a.slots}", f"student.train.cpus={cpus / a.slots}"]
    machine = torch.cuda.get_device_name() if gpu else f"{platform.processor() or platform.machine()} x{cpus} CPUs"
    with tempfile.TemporaryDirectory() as tmp:
        one = run(Path(tmp) / "one", [*base, "pipeline.max_parallel=1"])
        many = run(Path(tmp) / "many", [*base, *share])
    extra = f" (overrides: {', '.join(a.overrides)})" if a.overrides else ""
    print(f"# pipeline benchmark: demo, {a.seeds} seeds x {len(one['rows'])} rows x {a.epochs} epochs, {machine}, "
          f"torch {torch.__version__}{extra}")
    print("| trainings at once | run wall (s) | of which searching (s) | trainings (s) | trainings vs 1 slot |")
    print("|---|---|---|---|---|")
    print(f"| 1 (in-process) | {one['wall_s']:.1f} | {one['search_s']:.1f} | {one['trainings_s']:.1f} | 1.00 |")
    print(f"| {a.slots} (Ray tasks) | {many['wall_s']:.1f} | {many['search_s']:.1f} | {many['trainings_s']:.1f} | "
          f"{many['trainings_s'] / one['trainings_s']:.2f} |")
    same = "the same" if one["rows"] == many["rows"] else "NOT the same (different thread counts per training)"
    print(f"accuracies of the two runs: {same}")
    keep = ("wall_s", "search_s", "trainings_s")
    record = {"slots": a.slots, "device": "cuda" if gpu else "cpu", "same_accuracies": same == "the same",
              "one": {k: one[k] for k in keep}, "many": {k: many[k] for k in keep},
              "trainings_ratio": many["trainings_s"] / one["trainings_s"]}
    print("json: " + json.dumps(record))


if __name__ == "__main__":
    main()
