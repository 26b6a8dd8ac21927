"""Issue 15, item 2: does augmentation matter for the KD student at a budget, before a study spends hours on it?

For each budget (training images, teacher epochs, student epochs) of ``cpu/cifar10_resnet8_w2a2``: train the
ResNet-8 teacher once (crop + flip, seed 0), then distil the W/A 2/2 student with II-KD over several seeds with
(a) crop + flip only and (b) a fixed strong policy — the final policy of PBA's published CIFAR-10 schedule
(``pba-rcifar10``), every epoch — then crop + flip + PBA's cutout, as a searched-schedule row trains. A budget
is *usable* when the two means differ by more than twice the pooled seed standard deviation (either direction:
the search needs an effect to find).

Issue 26, item 2 adds budget options after the three numbers, ``IMAGES:TEACHER_EP:STUDENT_EP:key=value,...``:
``bits`` (the student's W/A, default 2), ``width`` (both ResNet-8s', default 16), ``cutout`` (the fixed arm's
cutout after the policy, default PBA's 16), ``teacher`` (a finished teacher folder under ``--out`` to distil from
instead of training one) and ``eval`` (evaluate a new teacher and the students every this many epochs and at the last, default 1).

Every training is a plain ``rolekd train`` / ``rolekd distill`` command (logged next to its folder); a re-run
skips finished trainings and resumes interrupted ones, so the script can be split across sessions.

    python docs/results/calibration_cifar10/calibrate.py --data-dir DIR --out DIR [--budget 1000:80:40 ...]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
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


def training_minutes(folder: Path) -> float:
    """Minutes the training spent in its epochs and evaluations, summed from its metrics (so a skipped,
    already finished training still reports its own cost)."""
    lines = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return sum(m.get("time_s", 0.0) for m in lines) / 60


def train(cmd: list[str], folder: Path, epochs: int, checkpoint: bool = False) -> dict:
    """Run one rolekd command into ``folder`` unless it finished there already; its last epoch's metrics.
    ``checkpoint``: finished means its last.pt is there too (a teacher's; students' are not committed)."""
    done = last_epoch(folder)
    if done is None or done["epoch"] < epochs or (checkpoint and not (folder / "last.pt").is_file()):
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


DEFAULTS = {"bits": 2, "width": 16, "cutout": 16, "teacher": "", "eval": 1}


def parse_budget(text: str) -> tuple[int, int, int, dict]:
    """``IMAGES:TEACHER_EP:STUDENT_EP[:key=value,...]`` -> the three numbers and the options (see the docstring)."""
    parts = text.split(":", 3)
    if len(parts) < 3:
        raise SystemExit(f"--budget {text!r}: expected IMAGES:TEACHER_EPOCHS:STUDENT_EPOCHS[:key=value,...]")
    options = dict(DEFAULTS)
    for item in (parts[3].split(",") if len(parts) == 4 and parts[3] else []):
        key, _, value = item.partition("=")
        if key not in DEFAULTS:
            raise SystemExit(f"--budget {text!r}: unknown option {key!r}; expected one of {sorted(DEFAULTS)}")
        options[key] = value if key == "teacher" else int(value)
    return int(parts[0]), int(parts[1]), int(parts[2]), options


def budget_name(subset: int, teacher_epochs: int, student_epochs: int, o: dict) -> str:
    """The first calibration's folder name for its defaults, a suffix per option that differs."""
    name = f"n{subset}_t{teacher_epochs}_s{student_epochs}"
    for key, short in (("bits", "wa"), ("width", "w"), ("cutout", "c")):
        if o[key] != DEFAULTS[key]:
            name += f"_{short}{o[key]}"
    return name


def calibrate(data_dir: str, out: Path, subset: int, teacher_epochs: int, student_epochs: int,
              seeds: list[int], options: dict | None = None) -> dict:
    o = {**DEFAULTS, **(options or {})}
    name = budget_name(subset, teacher_epochs, student_epochs, o)
    root = out / name
    data = ["--data-dir", data_dir, "--set", f"data.train_subset={subset}",
            "--set", f"data.reduced_train={subset // 2}", "--set", f"data.reduced_val={subset // 2}"]
    nets = ["--set", f"teacher.model_args.width={o['width']}", "--set", f"student.model_args.width={o['width']}"]
    started = time.monotonic()
    teacher = out / o["teacher"] if o["teacher"] else root / "teacher"
    t = train(["rolekd", "train", CONFIG, *data, *nets, "--set", f"teacher.train.epochs={teacher_epochs}",
               *(["--set", f"teacher.train.eval_every={o['eval']}"] if o["eval"] != 1 else []),
               "--out", str(teacher)], teacher, teacher_epochs, checkpoint=True)
    teacher_minutes = (time.monotonic() - started) / 60
    print(f"[{name}] teacher: {100 * t['val_acc']:.2f} % (train {100 * t['train_acc']:.1f} %)", flush=True)
    schedule = strong_schedule(student_epochs, root)
    fixed_label = f"crop + flip + fixed {STRONG} policy" + (f" + cutout {o['cutout']}" if o["cutout"] else "")
    rows: dict[str, list[dict]] = {"crop + flip": [], fixed_label: []}
    student = ["--set", f"student.w_bits={o['bits']}", "--set", f"student.a_bits={o['bits']}",
               "--set", f"student.train.eval_every={o['eval']}"]
    minutes: list[float] = []
    for seed in seeds:
        for label, extra in zip(rows, ([], ["--schedule", str(schedule),
                                            "--set", f"data.schedule_cutout={o['cutout']}"])):
            folder = root / f"{'plain' if not extra else 'fixed'}_seed{seed}"
            m = train(["rolekd", "distill", CONFIG, *data, *nets, *student, "--teacher", str(teacher / "last.pt"),
                       "--set", f"seed={seed}", "--set", f"student.train.epochs={student_epochs}", *extra,
                       "--out", str(folder)], folder, student_epochs)
            minutes.append(training_minutes(folder))
            rows[label].append(m)
            print(f"[{name}] {label}, seed {seed}: {100 * m['val_acc']:.2f} % (train {100 * m['train_acc']:.1f} %)"
                  f"  [{(time.monotonic() - started) / 60:.1f} min]", flush=True)
    (plain, plain_rows), (fixed, fixed_rows) = rows.items()
    test = {k: spread([100 * m["val_acc"] for m in v]) for k, v in rows.items()}
    fit = {k: spread([100 * m["train_acc"] for m in v]) for k, v in rows.items()}
    delta = test[fixed]["mean"] - test[plain]["mean"]
    pooled = math.sqrt((test[fixed]["std"] ** 2 + test[plain]["std"] ** 2) / 2)
    return {"budget": name, "train_images": subset, "teacher_epochs": teacher_epochs,
            "student_epochs": student_epochs, "options": o, "seeds": seeds, "teacher_test": 100 * t["val_acc"],
            "teacher_train": 100 * t["train_acc"], "test": test, "train": fit, "delta": delta,
            "pooled_std": pooled, "usable": abs(delta) > 2 * pooled, "helps": delta > 2 * pooled,
            "student_minutes": statistics.fmean(minutes)}


def table(results: list[dict]) -> str:
    lines = ["| budget (train images / teacher ep / student ep) | student W/A | width | teacher test % | augmentation "
             "| student test % (mean ± std over seeds) | student train % | min per student | Δ (fixed − plain) "
             "| 2 × pooled std | augmentation helps |",
             "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---|"]
    for r in results:
        o = {**DEFAULTS, **r.get("options", {})}
        for i, (label, s) in enumerate(r["test"].items()):
            head = (f"{r['train_images']} / {r['teacher_epochs']} / {r['student_epochs']}",
                    f"{o['bits']}/{o['bits']}", str(o["width"]), f"{r['teacher_test']:.2f}") if i == 0 \
                else ("", "", "", "")
            minutes = f"{r['student_minutes']:.1f}" if i == 0 and "student_minutes" in r else ""
            tail = (f"{r['delta']:+.2f}", f"{2 * r['pooled_std']:.2f}",
                    "yes" if r["delta"] > 2 * r["pooled_std"] else "no") if i == 1 else ("", "", "")
            lines.append(f"| {' | '.join(head)} | {label} | {s['mean']:.2f} ± {s['std']:.2f} | "
                         f"{r['train'][label]['mean']:.1f} | {minutes} | {' | '.join(tail)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", required=True, help="python-format CIFAR-10 (make_cifar10.py)")
    p.add_argument("--out", required=True, help="folder for the trainings, logs and calibration.json/.md")
    p.add_argument("--budget", action="append", metavar="IMAGES:TEACHER_EPOCHS:STUDENT_EPOCHS[:key=value,...]",
                   help="repeatable (default 1000:80:40); options bits, width, cutout, teacher, eval")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = p.parse_args(argv)
    out = Path(args.out)
    results = []
    for budget in args.budget or ["1000:80:40"]:
        subset, te, se, options = parse_budget(budget)
        results.append(calibrate(args.data_dir, out, subset, te, se, args.seeds, options))
        write(out, results)
    return 0


def write(out: Path, results: list[dict]) -> None:
    """The table so far (after every budget: a long calibration can be read while it runs)."""
    text = ("Student: DoReFa ResNet-8 distilled with II-KD from the full-precision ResNet-8 teacher, "
            "test split (10,000 images) of CIFAR-10 (JPEG copy), last epoch. Minutes: the student's own epochs "
            "and evaluations, mean over its trainings, on the machine the script ran on.\n\n" + table(results) + "\n")
    print(text, flush=True)
    (out / "calibration.md").write_text(text)
    (out / "calibration.json").write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    sys.exit(main())
