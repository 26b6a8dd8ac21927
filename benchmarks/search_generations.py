"""Benchmark: the generational search against the asynchronous Ray Tune PBT it replaced, in the same run.

Not a test. Runs the same `rolekd search` command twice per case — once with this checkout's code, once with the
code of a git ref (default 696b9db, the last commit with the asynchronous search), unpacked with `git archive` into a
temporary folder and put first on PYTHONPATH — and prints, per case:

  * wall time of the search (from its summary, Ray start apart) and of the whole command;
  * trial-epochs trained (every epoch of every trial, a lost trial's too) and wall seconds per trial-epoch — the
    fair comparison, since the asynchronous search loses trials;
  * the fraction of trial time spent waiting at the generation barrier (the generational search only);
  * exploits made and trials lost.

Cases: the demo's teacher search (4 trials x 10 epochs, interval 1) and a population of 8 x 20 epochs (interval 2,
a quarter of a CPU each, so all 8 train at once on 2 cores).

    python benchmarks/search_generations.py [--baseline-ref 696b9db] [--cases demo,p8]
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

REPO = Path(__file__).resolve().parents[1]
CASES = {
    "demo": ("demo teacher search, 4 x 10 epochs", []),
    "p8": ("population 8 x 20 epochs, interval 2", ["--set", "search.population=8", "--set", "search.epochs=20",
                                                    "--set", "search.perturbation_interval=2",
                                                    "--set", "search.quantile=0.25",
                                                    "--set", "search.cpus_per_trial=0.25"]),
}


def unpack(ref: str, into: Path) -> Path:
    """The ``src`` folder of ``ref``, for PYTHONPATH."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", ref, "src"], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into / "src"


def trial_epochs(out: Path) -> int:
    """Epochs trained by every trial, lost ones included (one progress line per epoch, whichever search wrote it)."""
    files = list(out.glob("trials/*/progress.jsonl")) or list(out.glob("ray/*/result.json"))
    return sum(sum(1 for line in f.read_text().splitlines() if line.strip()) for f in files)


def search(src: Path, extra: list[str], out: Path) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(src)}
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "rolekd.cli.main", "search", "demo", "--role", "teacher", *extra,
                           "--out", str(out)], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"search with {src} failed:\n{done.stderr[-2000:]}")
    summary = json.loads((out / "search_summary.json").read_text())
    n = trial_epochs(out)
    search_s = summary["wall_time_s"] - summary.get("ray_start_s", 0.0) if "generations" not in summary \
        else summary["wall_time_s"]
    return {"command_s": wall, "search_s": search_s, "trial_epochs": n, "s_per_trial_epoch": search_s / n,
            "barrier": summary.get("barrier_wait_fraction"), "exploits": summary["exploits"],
            "lost": len(summary["failed_trials"]), "restarts": done.stderr.count("restarting")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--baseline-ref", default="696b9db")
    p.add_argument("--cases", default="demo,p8")
    a = p.parse_args()
    print(f"# search: generational (this checkout) vs asynchronous ({a.baseline_ref}), "
          f"{platform.processor() or platform.machine()} x{os.cpu_count()} CPUs")
    print("| case | search | command wall (s) | search wall (s) | trial-epochs | s / trial-epoch | ratio to async "
          "| barrier wait | exploits | trials lost | restarts |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        old_src = unpack(a.baseline_ref, Path(tmp))
        for case in a.cases.split(","):
            title, extra = CASES[case]
            old = search(old_src, extra, Path(tmp) / f"{case}_async")
            new = search(REPO / "src", extra, Path(tmp) / f"{case}_generational")
            for name, r in (("asynchronous", old), ("generational", new)):
                ratio = r["s_per_trial_epoch"] / old["s_per_trial_epoch"]
                barrier = f"{100 * r['barrier']:.0f} %" if r["barrier"] is not None else "–"
                print(f"| {title} | {name} | {r['command_s']:.1f} | {r['search_s']:.1f} | {r['trial_epochs']} "
                      f"| {r['s_per_trial_epoch']:.3f} | {ratio:.2f} | {barrier} | {r['exploits']} | {r['lost']} "
                      f"| {r['restarts']} |", flush=True)


if __name__ == "__main__":
    sys.exit(main())
