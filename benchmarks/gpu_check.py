"""The prepared GPU check (issue 16): every speed goal measured in one invocation inside a 15-minute device lease.

Not a test. Each step runs as its own process with a time cap, so one slow or failing step costs only its cap;
the whole stays under about 7 minutes on one H200. Data is synthetic and CIFAR-shaped (speed does not depend on
content), generated where it runs. Prints one markdown table per step and a summary; writes at most 8 files to
``--out`` (default ``$OUT``): ``gpu_check.md``, ``gpu_check.json``, and the logs of the steps that failed.

    source .device/setup.sh && python benchmarks/gpu_check.py            # on the GPU machine
    python benchmarks/gpu_check.py --dry-run --out /tmp/check            # every step, tiny, on the CPU

Steps: the tests CUDA un-skips and a fast subset of the suite; augmentation (15 ops + a late policy) batched at
512 and 8192 vs the Pillow loop; a training epoch of a ResNet-18 teacher and the II-KD W/A 2/2 student vs a
torchvision-style DataLoader reference (``benchmarks/train.py``); a real ``rolekd search`` through Ray with 16
trials sharing the GPU, with GPU utilisation sampled by nvidia-smi; evaluation throughput on 36k images; and the
projected 200-epoch teacher and 16 x 200-epoch search from the measured rates.
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


@dataclass
class Step:
    name: str
    cmd: list[str]
    cap_s: int
    env: dict[str, str] = field(default_factory=dict)
    status: str = "not run"
    wall_s: float = 0.0
    output: str = ""

    def tables(self) -> str:
        """The markdown tables (and the machine line) the step printed."""
        keep = [line for line in self.output.splitlines() if line.startswith("|") or line.startswith("machine:")]
        return "\n".join(keep)


def steps(dry: bool, work: Path, python: str) -> list[Step]:
    """What is measured, as commands: full sizes on the GPU, tiny ones with ``dry`` (so CI keeps them working)."""
    bench = ROOT / "benchmarks"
    cuda_tests = ["tests/test_augment_ops.py", "tests/test_policy.py", "tests/test_train.py", "tests/test_quant.py"]
    data = work / "data"
    if dry:  # pytest collects only: the dry run itself runs inside the suite
        tests = [python, "-m", "pytest", "-q", "--co", "-p", "no:cacheprovider", *cuda_tests]
        augment = [[python, str(bench / "augment.py"), "--batch", "16", "--repeats", "1", "--skip-wrap"]]
        train = [python, str(bench / "train.py"), "--model", "resnet8", "--width", "4", "--batch", "8", "--steps", "2",
                 "--workers", "0", "--trial-images", "32", "--device", "cpu"]
        search = ["--set", "search.population=2", "--set", "search.epochs=1", "--set", "search.cpus_per_trial=1",
                  "--set", "data.reduced_train=64", "--set", "data.reduced_val=64", "--set", "device=cpu",
                  "--set", "teacher.model=resnet8", "--set", "teacher.model_args={width: 4}"]
        evaluate = [python, "-c", _EVAL, "resnet8", "4", "64", "cpu"]
    else:
        tests = [python, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-m", "not slow", *cuda_tests]
        augment = [[python, str(bench / "augment.py"), "--batch", str(b), "--repeats", "5"] for b in (512, 8192)]
        train = [python, str(bench / "train.py"), "--model", "resnet18", "--batch", "128", "--steps", "50",
                 "--workers", "8", "--device", "cuda"]
        search = ["--set", "search.population=16", "--set", "search.epochs=3", "--set", "search.gpus_per_trial=0.0625",
                  "--set", "search.cpus_per_trial=1", "--set", "data.reduced_train=4000", "--set",
                  "data.reduced_val=36000", "--set", "device=cuda", "--set", "teacher.model=resnet18",
                  "--set", "teacher.model_args={width: 64}"]
        evaluate = [python, "-c", _EVAL, "resnet18", "64", "36000", "cuda"]
    search_cmd = [python, "-m", "rolekd.cli.main", "search", "demo", "--role", "teacher", "--set", "data.dataset=cifar10",
                  *search, "--data-dir", str(data), "--out", str(work / "search")]
    out = [Step("tests: CUDA un-skipped + fast subset", tests, 150)]
    out += [Step(f"augmentation, batch {cmd[cmd.index('--batch') + 1]}", cmd, 60) for cmd in augment]
    out += [Step("training epoch: teacher and II-KD student vs DataLoader reference", train, 150),
            Step("search: rolekd search on Ray, trials sharing the GPU", search_cmd, 180),
            Step("evaluation throughput", evaluate, 60)]
    return out


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
print(json.dumps({'eval_images_per_s': n / s}))
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


def projections(search_dir: Path, train_step: Step) -> list[str]:
    """The 16 x 200-epoch search and the 200-epoch teacher, from the measured rates."""
    lines = []
    summary = search_dir / "search_summary.json"
    if summary.is_file():
        s = json.loads(summary.read_text())
        trial_epochs = s["population"] * s["epochs"]
        per_s = trial_epochs / max(s["wall_time_s"] - s.get("ray_start_s", 0.0), 1e-9)
        lines.append(f"- search: {trial_epochs} trial-epochs in {s['wall_time_s']:.0f} s ({s.get('ray_start_s', 0):.0f} s "
                     f"starting Ray): {per_s:.2f} trial-epochs/s -> a 16 x 200-epoch search ≈ {3200 / per_s / 60:.0f} min")
    for line in train_step.output.splitlines():
        if line.startswith("| (b) rolekd teacher step"):
            epoch_s = float(line.split("|")[4])  # the table's "CIFAR-10 epoch, 50k images (s)" column
            lines.append(f"- teacher: a 50k-image epoch ≈ {epoch_s:.0f} s (steady state, without evaluation) -> 200 "
                         f"epochs ≈ {200 * epoch_s / 60:.0f} min")
    return lines


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
    for step in plan:
        if step.name.startswith("search"):
            with GpuSampler(work / "nvidia_smi.csv") as sampler:
                run_step(step)
            step.output += "\n" + sampler.summary()
        else:
            run_step(step)
        print(f"[{time.perf_counter() - t0:5.0f} s] {step.name}: {step.status} ({step.wall_s:.0f} s)", flush=True)

    import torch

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA device"
    md = [f"# GPU check{' (dry run: tiny sizes on the CPU)' if args.dry_run else ''}", "",
          f"machine: {platform.node()}, {os.cpu_count()} CPUs, {device}, torch {torch.__version__}, "
          f"python {platform.python_version()}; total {time.perf_counter() - t0:.0f} s", "",
          "| step | status | wall (s) | cap (s) |", "|---|---|---:|---:|"]
    md += [f"| {s.name} | {s.status} | {s.wall_s:.0f} | {s.cap_s} |" for s in plan]
    for s in plan:
        md += ["", f"## {s.name}", "", s.tables() or "(no table printed)"]
        if s.name.startswith(("search", "tests")):  # the GPU samples; pytest's closing line
            md += ["", next((line for line in reversed(s.output.splitlines()) if line.strip()), "(no output)")]
    md += ["", "## Projections", "", *(projections(work / "search", plan[-3]) or ["- (no rate measured)"])]
    text = "\n".join(md) + "\n"
    print(text)
    (out / "gpu_check.md").write_text(text)
    (out / "gpu_check.json").write_text(json.dumps(
        [{"step": s.name, "status": s.status, "wall_s": round(s.wall_s, 1), "cap_s": s.cap_s} for s in plan], indent=1))
    failed = [s for s in plan if s.status != "ok"][: MAX_FILES - 2]
    for i, s in enumerate(failed):
        (out / f"step{i}.log").write_text(f"$ {' '.join(s.cmd)}\n{s.output[-20000:]}")
    shutil.rmtree(work, ignore_errors=True)
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
