"""The prepared GPU check (issue 16): every speed goal measured in one invocation inside a 15-minute device lease.

Not a test. Each step runs as its own process with a time cap, so one slow or failing step costs only its cap;
the whole should take about 6-7 minutes on one H100/H200 and takes at most the sum of the caps (560 s) plus
~10 s writing the data: run it with a 600 s limit. Data is synthetic and CIFAR-shaped (speed does not depend on
content), generated where it runs. Prints one markdown table per step, the goals (each with its measured value
and met / not met / not measured) and the projections; writes at most 8 files to ``--out`` (default ``$OUT``):
``gpu_check.md`` and ``gpu_check.json`` (rewritten after every step, so a run cut short keeps what it measured)
and the logs of the steps that failed.

    source .device/setup.sh && python benchmarks/gpu_check.py            # on the GPU machine
    python benchmarks/gpu_check.py --dry-run --out /tmp/check            # every step, tiny, on the CPU

Steps: the tests CUDA un-skips and a fast subset of the suite; augmentation (15 ops + a late policy) batched at
512 and 8192 vs the Pillow loop; a training epoch (``benchmarks/train.py``) of a ResNet-18 teacher (``train.compile``
off and on), the plain W/A 2/2 student and the II-KD W/A 2/2 student with and without KD-gradient clipping vs a
torchvision-style DataLoader reference in fp32 and with bf16 autocast + channels_last; a real ``rolekd search``
through Ray with 16 trials sharing the GPU, with GPU utilisation sampled by nvidia-smi; evaluation throughput on
36k images; a 4-seed ``rolekd run`` with its trainings one at a time vs 4 at once sharing the GPU
(``benchmarks/pipeline.py``, issue 17); and the projected 200-epoch teacher and 16 x 200-epoch search from the
measured rates.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAX_FILES = 8
DRY_CAP_FACTOR = 3  # the dry run's caps: a small (perhaps busy) CPU is slower than the GPU machine at tiny sizes
# the lines of a step's output its section of the report shows: tables and the lines that describe them
KEEP_PREFIXES = ("|", "machine:", "model ", "# pipeline benchmark", "accuracies of")


@dataclass
class Step:
    key: str
    name: str
    cmd: list[str]
    cap_s: int
    sample_gpu: bool = False
    env: dict[str, str] = field(default_factory=dict)
    status: str = "not run"
    wall_s: float = 0.0
    output: str = ""

    def tables(self) -> str:
        """The markdown tables (and the lines that describe them) the step printed."""
        return "\n".join(line for line in self.output.splitlines() if line.startswith(KEEP_PREFIXES))

    def records(self) -> list[dict]:
        """The step's machine-readable ``json: {...}`` lines, parsed (lines that do not parse are skipped)."""
        out = []
        for line in self.output.splitlines():
            if line.startswith("json: "):
                try:
                    out.append(json.loads(line[len("json: "):]))
                except json.JSONDecodeError:
                    pass
        return out

    def last_line(self) -> str:
        return next((line for line in reversed(self.output.splitlines()) if line.strip()), "(no output)")


def steps(dry: bool, work: Path, python: str) -> list[Step]:
    """What is measured, as commands: full sizes on the GPU, tiny ones with ``dry`` (so CI keeps them working)."""
    bench = ROOT / "benchmarks"
    cuda_tests = ["tests/test_augment_ops.py", "tests/test_policy.py", "tests/test_train.py", "tests/test_quant.py"]
    data = work / "data"
    # train.py's rows: both references, compile off/on, the plain student, II-KD with and without clipping
    train_rows = ["--reference-bf16", "--plain-student", "--kd-clip", "both", "--compile", "both"]
    # the pipeline's rows: stage α's teacher and stage β's student per seed (as many trainings at once as seeds)
    pipeline_rows = ["pipeline.baselines=[]"]
    if dry:  # pytest collects only: the dry run itself runs inside the suite
        tests = [python, "-m", "pytest", "-q", "--co", "-p", "no:cacheprovider", *cuda_tests]
        augment = [[python, str(bench / "augment.py"), "--batch", "16", "--repeats", "1", "--skip-wrap"]]
        train = [python, str(bench / "train.py"), "--model", "resnet8", "--width", "4", "--batch", "8", "--steps", "2",
                 "--workers", "0", "--trial-images", "32", "--device", "cpu", *train_rows,
                 "--compile-skipped", "dry run (compiling on the CPU takes many minutes)"]
        search = ["--set", "search.population=2", "--set", "search.epochs=1", "--set", "search.cpus_per_trial=1",
                  "--set", "data.reduced_train=64", "--set", "data.reduced_val=64", "--set", "device=cpu",
                  "--set", "teacher.model=resnet8", "--set", "teacher.model_args={width: 4}"]
        evaluate = [python, "-c", _EVAL, "resnet8", "4", "64", "cpu"]
        pipeline = [python, str(bench / "pipeline.py"), "--slots", "2", "--seeds", "2", "--epochs", "1", "--device",
                    "cpu", *_sets(*pipeline_rows, "teacher.model_args.width=4", "student.model_args.width=4",
                                  "data.train_subset=200", "data.reduced_train=64", "data.reduced_val=64",
                                  "search.epochs=1")]
    else:
        tests = [python, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-m", "not slow", *cuda_tests]
        augment = [[python, str(bench / "augment.py"), "--batch", str(b), "--repeats", "5"] for b in (512, 8192)]
        train = [python, str(bench / "train.py"), "--model", "resnet18", "--batch", "128", "--steps", "50",
                 "--workers", "8", "--device", "cuda", *train_rows]
        search = ["--set", "search.population=16", "--set", "search.epochs=3", "--set", "search.gpus_per_trial=0.0625",
                  "--set", "search.cpus_per_trial=1", "--set", "data.reduced_train=4000", "--set",
                  "data.reduced_val=36000", "--set", "device=cuda", "--set", "teacher.model=resnet18",
                  "--set", "teacher.model_args={width: 64}"]
        evaluate = [python, "-c", _EVAL, "resnet18", "64", "36000", "cuda"]
        pipeline = [python, str(bench / "pipeline.py"), "--slots", "4", "--seeds", "4", "--epochs", "2", "--device",
                    "cuda", *_sets(*pipeline_rows)]
    search_cmd = [python, "-m", "rolekd.cli.main", "search", "demo", "--role", "teacher", "--set", "data.dataset=cifar10",
                  *search, "--data-dir", str(data), "--out", str(work / "search")]
    slots = pipeline[pipeline.index("--slots") + 1]
    out = [Step("tests", "tests: CUDA un-skipped + fast subset", tests, 60)]
    out += [Step("augment", f"augmentation, batch {cmd[cmd.index('--batch') + 1]}", cmd, 30 if i == 0 else 40)
            for i, cmd in enumerate(augment)]
    out += [Step("train", "training epoch: teacher, plain and II-KD students vs DataLoader references", train, 140),
            Step("search", "search: rolekd search on Ray, trials sharing the GPU", search_cmd, 140, sample_gpu=True),
            Step("eval", "evaluation throughput", evaluate, 30),
            Step("pipeline", f"pipeline: rolekd run, trainings one at a time vs {slots} at once", pipeline, 120,
                 sample_gpu=True)]
    if dry:
        for step in out:
            step.cap_s *= DRY_CAP_FACTOR
    return out


def _sets(*items: str) -> list[str]:
    return [arg for item in items for arg in ("--set", item)]


# Evaluation: argv = model, width, images, device -> one JSON line with images/s.
_EVAL = """
import json, sys, time, torch
from rolekd.data import ImageSet, Normalizer
from rolekd.models import build_model
from rolekd.training import evaluate_model
name, width, n, device = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), torch.device(sys.argv[4])
g = torch.Generator().manual_seed(0)
data = ImageSet(torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g), torch.arange(n) % 10).to(device)
model = build_model(name, 10, width=width).to(device).eval()
norm = Normalizer((0.49, 0.48, 0.45), (0.25, 0.24, 0.26))
evaluate_model(model, data, norm, 1000)  # warm-up
if device.type == 'cuda': torch.cuda.synchronize()
t0 = time.perf_counter(); evaluate_model(model, data, norm, 1000)
if device.type == 'cuda': torch.cuda.synchronize()
s = time.perf_counter() - t0
print('| model | images | images/s |'); print('|---|---:|---:|'); print(f'| {name} (width {width}) | {n} | {n / s:.0f} |')
print('json: ' + json.dumps({'eval_images_per_s': n / s}))
"""


def run_step(step: Step) -> None:
    t0 = time.perf_counter()
    try:
        r = subprocess.run(step.cmd, capture_output=True, text=True, timeout=step.cap_s, cwd=ROOT,
                           env={**os.environ, **step.env})
        step.output = r.stdout + r.stderr
        step.status = "ok" if r.returncode == 0 else f"failed (exit {r.returncode})"
    except subprocess.TimeoutExpired as exc:
        step.output = (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        step.status = f"stopped at its {step.cap_s} s cap"
    step.wall_s = time.perf_counter() - t0


class GpuSampler:
    """``nvidia-smi`` utilisation and memory every 500 ms in the background (nothing without nvidia-smi)."""

    def __init__(self, path: Path) -> None:
        self.path, self.proc = path, None

    def __enter__(self) -> "GpuSampler":
        if shutil.which("nvidia-smi"):
            self.proc = subprocess.Popen(["nvidia-smi", "--query-gpu=utilization.gpu,memory.used", "--format=csv",
                                          "-lms", "500"], stdout=self.path.open("w"), stderr=subprocess.DEVNULL)
        return self

    def __exit__(self, *exc) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)

    def summary(self) -> str:
        if not self.path.is_file():
            return "no nvidia-smi: not sampled"
        rows = [line.split(",") for line in self.path.read_text().splitlines()[1:] if "," in line]
        util = [float(u.split()[0]) for u, _ in rows if u.split()]
        mem = [float(m.split()[0]) for _, m in rows if m.split()]
        if not util:
            return "no samples"
        return f"GPU utilisation mean {sum(util) / len(util):.0f} % (max {max(util):.0f} %), memory max {max(mem):.0f} MiB"


# ------------------------------------------------------------------ measured numbers -> projections and goals


@dataclass
class Measured:
    """The numbers the goals need, parsed from the steps' ``json:`` lines and the search's summary."""

    rows: dict[str, dict]  # train.py's rows by key
    search: dict | None  # the search's rate: trial_epochs, wall_s, ray_start_s, per_s, full_min (16 x 200 epochs)
    pipeline: dict | None  # pipeline.py's record

    @classmethod
    def of(cls, plan: list[Step], search_dir: Path) -> "Measured":
        by_key = {s.key: s for s in plan}
        rows = {r["key"]: r for r in by_key["train"].records() if "key" in r and not r.get("skipped")}
        pipeline = next(iter(by_key["pipeline"].records()), None)
        return cls(rows, search_rate(search_dir / "search_summary.json"), pipeline)

    def rate(self, key: str) -> float | None:
        return self.rows.get(key, {}).get("images_per_s")

    def ratio(self, num: str, den: str) -> float | None:
        """``rate(num) / rate(den)``: how many times faster ``num`` is (or, for step times, ``den`` slower)."""
        a, b = self.rate(num), self.rate(den)
        return a / b if a and b else None

    def teacher_200_min(self, key: str = "teacher") -> float | None:
        """A 200-epoch 50k-image teacher run in minutes at the row's steady rate, its compile time included."""
        row = self.rows.get(key)
        if not row or not row.get("epoch_s"):
            return None
        return (200 * row["epoch_s"] + (row.get("compile_s") or 0.0)) / 60


def search_rate(summary: Path) -> dict | None:
    if not summary.is_file():
        return None
    s = json.loads(summary.read_text())
    trial_epochs, ray = s["population"] * s["epochs"], s.get("ray_start_s", 0.0)
    per_s = trial_epochs / max(s["wall_time_s"] - ray, 1e-9)
    return {"trial_epochs": trial_epochs, "wall_s": s["wall_time_s"], "ray_start_s": ray, "per_s": per_s,
            "full_min": 16 * 200 / per_s / 60}


def projections(m: Measured) -> list[str]:
    """The 16 x 200-epoch search and the 200-epoch teacher, from the measured rates."""
    lines = []
    if m.search:
        s = m.search
        lines.append(f"- search: {s['trial_epochs']} trial-epochs in {s['wall_s']:.0f} s ({s['ray_start_s']:.0f} s "
                     f"starting Ray): {s['per_s']:.2f} trial-epochs/s -> a 16 x 200-epoch search ≈ "
                     f"{s['full_min']:.0f} min")
    for key, how in (("teacher", ""), ("teacher_compiled", " with train.compile (its compile time included)")):
        if (minutes := m.teacher_200_min(key)) is not None:
            lines.append(f"- teacher{how}: a 50k-image epoch ≈ {m.rows[key]['epoch_s']:.0f} s (steady state, without "
                         f"evaluation) -> 200 epochs ≈ {minutes:.0f} min")
    if m.pipeline:
        p = m.pipeline
        lines.append(f"- trainings at once (issue 17): {p['slots']} at once on {p['device']} took "
                     f"{p['trainings_ratio']:.2f}x the time of one after another")
    return lines


@dataclass
class Goal:
    name: str
    target: str
    measured: str | None  # None: not measured
    met: bool | None

    def line(self) -> str:
        status = "not measured" if self.met is None else ("met" if self.met else "not met")
        return f"| {self.name} | {self.target} | {self.measured or '–'} | {status} |"


def _goal(name: str, target: str, value: float | None, limit: float, at_most: bool, fmt: str) -> Goal:
    """A goal on one number: ``value <= limit`` (``at_most``) or ``value >= limit``."""
    if value is None:
        return Goal(name, target, None, None)
    return Goal(name, target, fmt.format(value), value <= limit if at_most else value >= limit)


def goals(m: Measured) -> list[Goal]:
    share = m.rows.get("teacher", {}).get("augment_share")
    kd = {clip: m.ratio("student_plain", f"student_iikd_{clip}") for clip in ("noclip", "clip")}
    out = [
        _goal("augmentation share of a training step (rolekd teacher step, CE)", "≤ 5 %",
              None if share is None else 100 * share, 5.0, True, "{:.1f} %"),
        _goal("II-KD W/A 2/2 student step vs the plain W/A 2/2 student step, KD clipping off", "≤ 1.6×",
              kd["noclip"], 1.6, True, "{:.2f}×"),
        _goal("II-KD W/A 2/2 student step vs the plain W/A 2/2 student step, KD clipping on", "≤ 2.0×",
              kd["clip"], 2.0, True, "{:.2f}×"),
        _teacher_goal(m),
        _goal("16-trial × 200-epoch search, projected", "≤ 30 min", m.search and m.search["full_min"], 30.0, True,
              "{:.0f} min"),
    ]
    for ref, label in (("reference", "fp32"), ("reference_bf16_cl", "bf16 autocast + channels_last")):
        out.append(_goal(f"rolekd teacher epoch (compile off) vs the DataLoader reference, {label}", "≥ 2×",
                         m.ratio("teacher", ref), 2.0, False, "{:.2f}×"))
    return out


def _teacher_goal(m: Measured) -> Goal:
    """The 200-epoch ResNet-18 teacher: met where compile off or on (compile time included) is within 5 min."""
    off, on = m.teacher_200_min("teacher"), m.teacher_200_min("teacher_compiled")
    g = _goal("200-epoch ResNet-18 CIFAR-10 teacher, projected", "≤ 5 min", off, 5.0, True,
              "{:.1f} min (compile off)")
    if on is not None:
        compile_s = m.rows["teacher_compiled"]["compile_s"] or 0.0
        measured = f"{g.measured or '–'}; {on:.1f} min with train.compile ({compile_s:.0f} s compiling)"
        g = Goal(g.name, g.target, measured, min(v for v in (off, on) if v is not None) <= 5.0)
    return g


# ------------------------------------------------------------------ the report


def report(plan: list[Step], dry: bool, elapsed: float, work: Path) -> str:
    import torch

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA device"
    m = Measured.of(plan, work / "search")
    md = [f"# GPU check{' (dry run: tiny sizes on the CPU)' if dry else ''}", "",
          f"machine: {platform.node()}, {os.cpu_count()} CPUs, {device}, torch {torch.__version__}, "
          f"python {platform.python_version()}; total {elapsed:.0f} s", "",
          "| step | status | wall (s) | cap (s) |", "|---|---|---:|---:|"]
    md += [f"| {s.name} | {s.status} | {s.wall_s:.0f} | {s.cap_s} |" for s in plan]
    for s in plan:
        md += ["", f"## {s.name}", "", s.tables() or "(no table printed)"]
        if s.key in ("search", "tests", "pipeline"):  # the GPU samples; pytest's closing line
            md += ["", s.last_line()]
    md += ["", "## Goals", ""]
    if dry:
        md += ["(dry run: tiny sizes on a CPU; the values exercise the code and measure nothing)", ""]
    md += ["| goal | target | measured | status |", "|---|---|---|---|", *(g.line() for g in goals(m))]
    md += ["", "## Projections", "", *(projections(m) or ["- (no rate measured)"])]
    return "\n".join(md) + "\n"


def write_report(out: Path, plan: list[Step], text: str) -> None:
    (out / "gpu_check.md").write_text(text)
    (out / "gpu_check.json").write_text(json.dumps(
        [{"step": s.name, "status": s.status, "wall_s": round(s.wall_s, 1), "cap_s": s.cap_s} for s in plan], indent=1))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true", help="every step with tiny sizes on the CPU")
    ap.add_argument("--out", default=os.environ.get("OUT"), help="folder for the results (default $OUT)")
    args = ap.parse_args(argv)
    if not args.out:
        ap.error("--out or $OUT is required")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="gpu_check_"))
    from rolekd.data.cifar import write_synthetic_cifar

    t0 = time.perf_counter()
    n_train = 2000 if args.dry_run else 50000
    write_synthetic_cifar(work / "data", "cifar10", n_train=n_train, n_test=200 if args.dry_run else 10000)
    plan = steps(args.dry_run, work, sys.executable)
    for i, step in enumerate(plan):
        if step.sample_gpu:
            with GpuSampler(work / f"nvidia_smi_{i}.csv") as sampler:
                run_step(step)
            step.output += "\n" + sampler.summary()
        else:
            run_step(step)
        print(f"[{time.perf_counter() - t0:5.0f} s] {step.name}: {step.status} ({step.wall_s:.0f} s)", flush=True)
        write_report(out, plan, report(plan, args.dry_run, time.perf_counter() - t0, work))  # a cut-short run keeps it
    text = report(plan, args.dry_run, time.perf_counter() - t0, work)
    print(text)
    write_report(out, plan, text)
    failed = [s for s in plan if s.status != "ok"][: MAX_FILES - 2]
    for i, s in enumerate(failed):
        (out / f"step{i}.log").write_text(f"$ {' '.join(s.cmd)}\n{s.output[-20000:]}")
    shutil.rmtree(work, ignore_errors=True)
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
