"""The prepared GPU check keeps working: its dry run runs every step with tiny sizes on the CPU, and its goals
table judges the measured numbers against the issue's targets."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GOALS = 7  # augmentation, II-KD without / with clipping, teacher, search, rolekd vs the two references


def _gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _row(key: str, images_per_s: float, **extra) -> dict:
    return {"key": key, "images_per_s": images_per_s, "epoch_s": 50000 / images_per_s, **extra}


def test_the_goals_are_judged_against_the_issues_targets():
    gc = _gpu_check()
    rows = [_row("reference", 10000), _row("reference_bf16_cl", 25000), _row("teacher", 40000, augment_share=0.06),
            _row("student_plain", 30000), _row("student_iikd_noclip", 20000), _row("student_iikd_clip", 14000),
            _row("teacher_compiled", 60000, compile_s=45.0)]
    m = gc.Measured({r["key"]: r for r in rows}, {"full_min": 29.0}, None)
    status = {g.name: g.met for g in gc.goals(m)}
    assert len(status) == GOALS
    assert status["augmentation share of a training step (rolekd teacher step, CE)"] is False  # 6 % > 5 %
    assert status["II-KD W/A 2/2 student step vs the plain W/A 2/2 student step, KD clipping off"] is True  # 1.5x
    assert status["II-KD W/A 2/2 student step vs the plain W/A 2/2 student step, KD clipping on"] is False  # 2.14x
    # compile off: 200 x 1.25 s = 4.2 min; met (compile on: 200 x 0.83 s + 45 s = 3.5 min)
    assert status["200-epoch ResNet-18 CIFAR-10 teacher, projected"] is True
    assert status["16-trial × 200-epoch search, projected"] is True
    assert status["rolekd teacher epoch (compile off) vs the DataLoader reference, fp32"] is True  # 4x
    assert status["rolekd teacher epoch (compile off) vs the DataLoader reference, bf16 autocast + channels_last"] is False

    nothing = {g.name: g.line() for g in gc.goals(gc.Measured({}, None, None))}
    assert all(line.endswith("| – | not measured |") for line in nothing.values())
    slow = gc.Measured({"teacher": _row("teacher", 1000)}, None, None)  # 50 s an epoch: 167 min
    teacher = next(g for g in gc.goals(slow) if g.name.startswith("200-epoch"))
    assert teacher.met is False and teacher.measured == "166.7 min (compile off)"


def _section(md: str, title: str) -> list[str]:
    lines = md.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0].splitlines()
    return [line for line in lines if line.startswith("|")]


@pytest.mark.slow
def test_the_gpu_check_dry_run_measures_every_step_and_writes_its_tables(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--dry-run", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    steps = json.loads((tmp_path / "gpu_check.json").read_text())
    assert [s["status"] for s in steps] == ["ok"] * len(steps) and len(steps) == 6
    md = (tmp_path / "gpu_check.md").read_text()
    for row in ("| (a) PyTorch reference: PIL policy+crop+flip, DataLoader |",
                "| (a') PyTorch reference + bf16 autocast + channels_last |",
                "| (b) rolekd plain student step (CE, W/A 2/2) |",
                "| (b) rolekd KD student step (II-KD, W/A 2/2, KD clipping on) |",
                "| (b) rolekd KD student step (II-KD, W/A 2/2, KD clipping off) |",
                "| (b) rolekd teacher step (CE), train.compile on | skipped: dry run",
                "(b)  rolekd batched", "| resnet8 (width 4) | 64 |", "| 1 (in-process) |", "| 2 (Ray tasks) |"):
        assert row in md, row
    assert "trial-epochs/s" in md and "200 epochs ≈" in md and "2 at once on cpu took" in md  # from measured rates

    goals = _section(md, "Goals")[2:]  # one line per goal, each measured and judged (compile is skipped: not in it)
    assert len(goals) == GOALS
    assert all(re.search(r"\| (met|not met) \|$", line) for line in goals), goals
    # the goals are the steps' numbers: rolekd vs the fp32 reference is the table's "vs (a)" of the teacher step
    vs_a = re.search(r"\| \(b\) rolekd teacher step \(CE\) \| \d+ \| ([\d.]+)x \|", md).group(1)
    assert f"fp32 | ≥ 2× | {vs_a}× |" in md
    assert len(list(tmp_path.iterdir())) <= 8
