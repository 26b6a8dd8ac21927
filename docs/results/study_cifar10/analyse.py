"""Issue 15, item 4: reading a finished study's run folder for why A_S did or did not beat its baselines.

Prints markdown: (1) each search's signal — the spread of its population's final validation accuracies against
the binomial standard error of one accuracy on the validation split; (2) the schedules — how strong A_T and A_S
are over the epochs and how far apart, and whether A_S replays unchanged at the retrain's length; (3) fit — train
and test accuracy of every row over seeds (over- or under-fitting); (4) the student rows' test accuracy at the
last evaluation before A_S's first augmented epoch, which separates what A_S's policy did from what the rest of
its augmentation (PBA's cutout after a searched schedule) did.

    python docs/results/study_cifar10/analyse.py RUN_FOLDER
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path

from rolekd.augment.schedule import Schedule
from rolekd.config import load_config
from rolekd.pipeline.folders import seed_folder
from rolekd.pipeline.run import plan_rows


def search_signal(run: Path, n_val: int) -> list[str]:
    lines = ["| search | trials | final val % (min – max) | std over trials | binomial SE of one accuracy | std / SE |",
             "|---|---:|---|---:|---:|---:|"]
    for stage in ("stage_alpha", "stage_beta"):
        path = run / stage / "search" / "search_summary.json"
        if not path.is_file():
            continue
        accs = list(json.loads(path.read_text())["final_val_acc"].values())
        mean, std = statistics.mean(accs), statistics.stdev(accs)
        se = math.sqrt(mean * (1 - mean) / n_val)
        lines.append(f"| {stage} | {len(accs)} | {100 * min(accs):.1f} – {100 * max(accs):.1f} | {100 * std:.2f} | "
                     f"{100 * se:.2f} | {std / se:.2f} |")
    return lines


def schedule_strength(run: Path, epochs: dict[str, int]) -> list[str]:
    lines = ["| schedule | epochs | Σp at 10 % / 50 % / 100 % of the epochs | mean Σp | mean magnitude of firing ops |",
             "|---|---:|---|---:|---:|"]
    found = {}
    for name, stage in (("A_T", "stage_alpha"), ("A_S", "stage_beta")):
        path = run / stage / "schedule.json"
        if not path.is_file():
            continue
        sched = Schedule.load(path)
        found[name] = sched
        pols = sched.policies
        sums = [p.prob_sum for p in pols]
        at = [sums[max(0, math.ceil(f * len(pols)) - 1)] for f in (0.1, 0.5, 1.0)]
        fired = [(e.prob, e.mag) for p in pols for e in p.entries if e.prob]
        mag = sum(p * m for p, m in fired) / max(1, sum(p for p, _ in fired))
        lines.append(f"| {name} | {sched.epochs} | {' / '.join(f'{s:.1f}' for s in at)} | {statistics.mean(sums):.2f} "
                     f"| {mag:.1f} |")
    if len(found) == 2:
        t, s = (found[k].stretch(epochs["student"]).policies for k in ("A_T", "A_S"))
        dist = statistics.mean(sum(abs(a.prob - b.prob) for a, b in zip(pt.entries, ps.entries)) / 10 for pt, ps in zip(t, s))
        lines += ["", f"Mean L1 distance between A_T and A_S per epoch (probabilities, both at the student's "
                      f"{epochs['student']} epochs): {dist:.2f} (Σp of either is at most 30)."]
        replay = found["A_S"].stretch(epochs["student"]).policies == found["A_S"].policies
        lines.append(f"A_S replays unchanged at the retrain's {epochs['student']} epochs: {replay}.")
    return lines


def fit(run: Path, cfg, seeds: list[int]) -> list[str]:
    lines = ["| row | train % (last epoch, mean over seeds) | test % (last epoch) | gap |", "|---|---:|---:|---:|"]
    for row in plan_rows(cfg):
        last = []
        for seed in seeds:
            path = seed_folder(run / row.folder, seed) / "metrics.jsonl"
            if path.is_file():
                rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
                last.append(rows[-1])
        if len(last) != len(seeds) or any("val_acc" not in m for m in last):
            continue
        train = statistics.mean(m["train_acc"] for m in last)
        test = statistics.mean(m["val_acc"] for m in last)
        lines.append(f"| {row.label} | {100 * train:.1f} | {100 * test:.2f} | {100 * (train - test):.1f} |")
    return lines


def before_policy(run: Path, cfg, seeds: list[int]) -> list[str]:
    path = run / "stage_beta" / "schedule.json"
    if not path.is_file():
        return []
    first = next((e + 1 for e, p in enumerate(Schedule.load(path).policies) if p.prob_sum), None)
    if first is None:
        return ["A_S applies no operation in any epoch."]
    lines = [f"A_S applies no operation before epoch {first}. Test accuracy at the last evaluation before it:", "",
             "| row | epoch | test % per seed | mean |", "|---|---:|---|---:|"]
    for row in plan_rows(cfg):
        if row.role != "student":
            continue
        accs, at = [], None
        for seed in seeds:
            path = seed_folder(run / row.folder, seed) / "metrics.jsonl"
            rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.is_file() else []
            evaluated = [m for m in rows if "val_acc" in m and m["epoch"] < first]
            if evaluated:
                at, acc = evaluated[-1]["epoch"], evaluated[-1]["val_acc"]
                accs.append(acc)
        if len(accs) == len(seeds):
            per = ", ".join(f"{100 * a:.2f}" for a in accs)
            lines.append(f"| {row.label} | {at} | {per} | {100 * statistics.mean(accs):.2f} |")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path)
    a = p.parse_args()
    cfg = load_config(a.run / "config.yaml")
    epochs = {"teacher": cfg.teacher.train.epochs, "student": cfg.student.train.epochs}
    print(f"# Study analysis: {a.run.name}\n")
    print("## 1. Search signal\n")
    print("\n".join(search_signal(a.run, cfg.data.reduced_val)) + "\n")
    print("## 2. Schedules\n")
    print("\n".join(schedule_strength(a.run, epochs)) + "\n")
    print("## 3. Fit\n")
    print("\n".join(fit(a.run, cfg, cfg.pipeline.seeds)) + "\n")
    print("## 4. Before A_S's policy\n")
    print("\n".join(before_policy(a.run, cfg, cfg.pipeline.seeds)))


if __name__ == "__main__":
    main()
