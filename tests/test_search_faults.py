"""Faults during a search (issue 19, item 9): a trial's worker killed mid-search is restarted from its last
checkpoint and the schedule is still extracted; a whole `rolekd run` killed during stage β's search continues,
with --resume, from the trials' checkpoints (not from scratch), and the report says so."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rolekd.augment.schedule import Schedule

pytestmark = pytest.mark.slow

TINY_SEARCH = ["--set", "search.population=2", "--set", "search.epochs=3", "--set", "search.cpus_per_trial=1",
               "--set", "teacher.model_args.width=8", "--set", "student.model_args.width=8"]


def _start(*args: str, log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "rolekd.cli.main", *args], stdout=log.open("w"),
                            stderr=subprocess.STDOUT, start_new_session=True)  # its own group: Ray's processes too


def _wait_for(condition, proc: subprocess.Popen, seconds: float = 400) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert proc.poll() is None, "the command ended before the fault could be injected"
        assert time.monotonic() < deadline, "timed out waiting for the search to make progress"
        time.sleep(0.5)


def _trial_workers() -> list[int]:
    """PIDs of Ray workers training a trial right now (title ``ray::ResourceTrainable.train``; a paused or
    exploited trial's actor may be stopping, and killing it would inject no fault)."""
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if cmdline.read_bytes().startswith(b"ray::ResourceTrainable.train"):
                pids.append(int(cmdline.parent.name))
        except OSError:
            continue
    return pids


def _checkpointed(folder: Path) -> bool:
    """A trial has saved an epoch's checkpoint (Ray's result.json may be buffered until the trial ends)."""
    return any(folder.glob("ray/*/checkpoint_*/trial.pt"))


def test_a_killed_trial_worker_is_restarted_and_the_schedule_still_extracted(tmp_path):
    out, log = tmp_path / "search", tmp_path / "search.log"
    longer = [*TINY_SEARCH, "--set", "search.epochs=8"]  # time to inject the fault after the first checkpoint
    proc = _start("search", "demo", "--role", "teacher", *longer, "--out", str(out), log=log)
    try:
        recovered = lambda: "failed; restarting it from its last checkpoint" in log.read_text()  # noqa: E731
        for _ in range(3):  # mid-search: a trial has checkpointed an epoch, none finished
            _wait_for(lambda: _checkpointed(out) and _trial_workers(), proc)
            try:
                os.kill(_trial_workers()[0], signal.SIGKILL)
            except (ProcessLookupError, IndexError):
                continue
            deadline = time.monotonic() + 20
            while not recovered() and time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.5)
            if recovered():
                break
        assert proc.wait(timeout=600) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert "failed; restarting it from its last checkpoint" in log.read_text()
    summary = json.loads((out / "search_summary.json").read_text())
    assert len(summary["final_val_acc"]) == 2 and summary["failed_trials"] == []
    assert len(Schedule.load(out / "schedule.json").policies) == 8


def test_a_run_killed_in_stage_beta_search_resumes_from_the_trials_checkpoints(tmp_path):
    out, log = tmp_path / "run", tmp_path / "run.log"
    args = ["run", "demo", *TINY_SEARCH, "--set", "teacher.train.epochs=1", "--set", "student.train.epochs=1",
            "--set", "pipeline.baselines=[]", "--out", str(out)]
    proc = _start(*args, log=log)
    beta = out / "stage_beta" / "search"
    try:
        _wait_for(lambda: any(beta.glob("ray/*/checkpoint_*/trial.pt")), proc, seconds=900)
        os.killpg(proc.pid, signal.SIGKILL)  # the whole run, Ray included, as a power cut would
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert not (beta / "search_summary.json").exists()
    teacher = out / "stage_alpha" / "teacher" / "seed0" / "last.pt"
    teacher_mtime = teacher.stat().st_mtime_ns
    resumed = subprocess.run([sys.executable, "-m", "rolekd.cli.main", *args, "--resume"], capture_output=True,
                             text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert teacher.stat().st_mtime_ns == teacher_mtime  # stage α was not trained again
    summary = json.loads((beta / "search_summary.json").read_text())
    (resume,) = summary["resumes"]
    assert resume and max(resume.values()) >= 1  # trials continued from a checkpoint past epoch 0, not from scratch
    assert len(summary["final_val_acc"]) == 2
    assert "search was interrupted and resumed" in (out / "report.md").read_text()
