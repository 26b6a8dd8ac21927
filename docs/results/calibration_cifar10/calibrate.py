"""Issue 15, item 2: does augmentation matter for the KD student at a budget, before a study spends hours on it?

For each budget (training images, teacher epochs, student epochs) of ``cpu/cifar10_resnet8_w2a2``: train the
ResNet-8 teacher once (crop + flip, seed 0), then distil the W/A 2/2 student with II-KD over several seeds with
(a) crop + flip only and (b) a fixed strong policy — the final policy of PBA's published CIFAR-10 schedule
(``pba-rcifar10``), every epoch — then crop + flip + PBA's cutout, as a searched-schedule row trains. A budget
is *usable* when the two means differ by more than twice the pooled seed standard deviation (either direction:
the search needs an effect to find).

Every training is a plain ``rolekd train`` / ``rolekd distill`` command (logged next to its folder); a re-run
skips finished trainings and resumes interrupted ones, so the script can be split across sessions.

    python docs/results/calibration_cifar10/calibrate.py --data-dir DIR --out DIR [--budget 1000:80:40 ...]
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

from rolekd.augment.schedule import Schedule
from rolekd.pipeline.stats import spread

CONFIG = "cpu/cifar10_resnet8_w2a2"
STRONG = "pba-rcifar10"


def last_epoch(folder: Path) -> dict | None:
    """The last line of a training's metrics.jsonl, or None when it has none."""
    path = folder / "metrics.jsonl"
    if not path.is_file():
        return None
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    return json.loads(lines[-1]) if lines else None


def train(cmd: list[str], folder: Path, epochs: int) -> dict:
    """Run one rolekd command into ``folder`` unless it finished there already; its last epoch's metrics."""
    done = last_epoch(folder)
    if done is None or done["epoch"] < epochs or not (folder / "last.pt").is_file():
        resume = ["--resume"] if (folder / "config.yaml").is_file() else []
        folder.parent.mkdir(parents=True, exist_ok=True)
        with open(folder.parent / f"{folder.name}.log", "a") as log:
            log.write("$ " + " ".join(cmd + resume) + "\n")
            log.flush()
            subprocess.run(cmd + resume, stdout=log, stderr=subprocess.STDOUT, check=True)
        done = last_epoch(folder)
    return done


def strong_schedule(epochs: int, out: Path) -> Path:
    packaged = Schedule.load(STRONG)
    policy = packaged.segments[-1][1]
    fixed = Schedule.constant(policy, epochs).with_provenance(
        f"the final policy of the packaged {STRONG} ({packaged.provenance}), held for every epoch")
    return fixed.save(out / f"fixed_{STRONG}_{epochs}.json")


def calibrate(data_dir: str, out: Path, subset: int, teacher_epochs: int, student_epochs: int,
              seeds: list[int]) -> dict:
    name = f"n{subset}_t{teacher_epochs}_s{student_epochs}"
    root = out / name
    data = ["--data-dir", data_dir, "--set", f"data.train_subset={subset}",
            "--set", f"data.reduced_train={subset // 2}", "--set", f"data.reduced_val={subset // 2}"]
    started = time.monotonic()
    teacher = root / "teacher"
    t = train(["rolekd", "train", CONFIG, *data, "--set", f"teacher.train.epochs={teacher_epochs}",
               "--out", str(teacher)], teacher, teacher_epochs)
    print(f"[{name}] teacher: {100 * t['val_acc']:.2f} % (train {100 * t['train_acc']:.1f} %)", flush=True)
    schedule = strong_schedule(student_epochs, root)
    rows: dict[str, list[dict]] = {"crop + flip": [], f"crop + flip + fixed {STRONG} policy + cutout": []}
    for seed in seeds:
        for label, extra in zip(rows, ([], ["--schedule", str(schedule)])):
            folder = root / f"{'plain' if not extra else 'fixed'}_seed{seed}"
            m = train(["rolekd", "distill", CONFIG, *data, "--teacher", str(teacher / "last.pt"),
                       "--set", f"seed={seed}", "--set", f"student.train.epochs={student_epochs}", *extra,
                       "--out", str(folder)], folder, student_epochs)
            rows[label].append(m)
            print(f"[{name}] {label}, seed {seed}: {100 * m['val_acc']:.2f} % (train {100 * m['train_acc']:.1f} %)"
                  f"  [{(time.monotonic() - started) / 60:.1f} min]", flush=True)
    (plain, plain_rows), (fixed, fixed_rows) = rows.items()
    test = {k: spread([100 * m["val_acc"] for m in v]) for k, v in rows.items()}
    fit = {k: spread([100 * m["train_acc"] for m in v]) for k, v in rows.items()}
    delta = test[fixed]["mean"] - test[plain]["mean"]
    pooled = math.sqrt((test[fixed]["std"] ** 2 + test[plain]["std"] ** 2) / 2)
    return {"budget": name, "train_images": subset, "teacher_epochs": teacher_epochs,
            "student_epochs": student_epochs, "seeds": seeds, "teacher_test": 100 * t["val_acc"],
            "teacher_train": 100 * t["train_acc"], "test": test, "train": fit, "delta": delta,
            "pooled_std": pooled, "usable": abs(delta) > 2 * pooled}


def table(results: list[dict]) -> str:
    lines = ["| budget (train images / teacher ep / student ep) | teacher test % | augmentation | student test % "
             "(mean ± std over seeds) | student train % | Δ (fixed − plain) | 2 × pooled std | usable |",
             "|---|---:|---|---:|---:|---:|---:|---|"]
    for r in results:
        for i, (label, s) in enumerate(r["test"].items()):
            head = (f"{r['train_images']} / {r['teacher_epochs']} / {r['student_epochs']}",
                    f"{r['teacher_test']:.2f}") if i == 0 else ("", "")
            tail = (f"{r['delta']:+.2f}", f"{2 * r['pooled_std']:.2f}", "yes" if r["usable"] else "no") \
                if i == 1 else ("", "", "")
            lines.append(f"| {head[0]} | {head[1]} | {label} | {s['mean']:.2f} ± {s['std']:.2f} | "
                         f"{r['train'][label]['mean']:.1f} | {' | '.join(tail)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", required=True, help="python-format CIFAR-10 (make_cifar10.py)")
    p.add_argument("--out", required=True, help="folder for the trainings, logs and calibration.json/.md")
    p.add_argument("--budget", action="append", metavar="IMAGES:TEACHER_EPOCHS:STUDENT_EPOCHS",
                   help="repeatable (default 1000:80:40)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = p.parse_args(argv)
    out = Path(args.out)
    results = []
    for budget in args.budget or ["1000:80:40"]:
        subset, te, se = (int(x) for x in budget.split(":"))
        results.append(calibrate(args.data_dir, out, subset, te, se, args.seeds))
    text = ("Student: DoReFa W/A 2/2 ResNet-8 distilled with II-KD from the ResNet-8 teacher, "
            "test split (10,000 images) of CIFAR-10 (JPEG copy), last epoch.\n\n" + table(results) + "\n")
    print(text)
    (out / "calibration.md").write_text(text)
    (out / "calibration.json").write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
