"""The prepared GPU check keeps working: its dry run runs every step with tiny sizes on the CPU."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_the_gpu_check_dry_run_measures_every_step_and_writes_its_table(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--dry-run", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    steps = json.loads((tmp_path / "gpu_check.json").read_text())
    assert [s["status"] for s in steps] == ["ok"] * len(steps) and len(steps) == 5
    md = (tmp_path / "gpu_check.md").read_text()
    for table in ("| (b) rolekd KD student step (II-KD, W/A 2/2) |", "(b)  rolekd batched", "| resnet8 (width 4) | 64 |"):
        assert table in md
    assert "trial-epochs/s" in md and "200 epochs ≈" in md  # the projections came from measured rates
    assert len(list(tmp_path.iterdir())) <= 8
