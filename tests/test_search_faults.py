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


def _trial_workers(session: int) -> list[int]:
    """PIDs of this test's Ray workers training a trial right now (title ``ray::TrialWorker.run``; an idle worker
    waiting at the barrier would be replaced before its next task, and killing it would inject no fault into a
    trial). Only processes of the command's own session: never another search's workers on the same machine."""
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            pid = int(cmdline.parent.name)
            if cmdline.read_bytes().startswith(b"ray::TrialWorker.run") and os.getsid(pid) == session:
                pids.append(pid)
        except OSError:
            continue
    return pids


def _generation(folder: Path) -> int:
    """The search's complete generations, as its state file says (0 before the first)."""
    try:
        return json.loads((folder / "search_state.json").read_text())["generation"]
    except (OSError, ValueError, KeyError):
        return 0


def _checkpointed(folder: Path) -> bool:
    return _generation(folder) >= 1


def test_a_killed_trial_worker_is_restarted_and_the_schedule_still_extracted(tmp_path):
    out, log = tmp_path / "search", tmp_path / "search.log"
    longer = [*TINY_SEARCH, "--set", "search.epochs=8"]  # time to inject the fault after the first checkpoint
    proc = _start("search", "demo", "--role", "teacher", *longer, "--out", str(out), log=log)
    try:
        recovered = lambda: "failed (its worker died" in log.read_text()  # noqa: E731
        for _ in range(3):  # mid-search: a generation is complete, the search not
            _wait_for(lambda: _checkpointed(out) and _trial_workers(proc.pid), proc)
            try:
                os.kill(_trial_workers(proc.pid)[0], signal.SIGKILL)
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
    assert "failed (its worker died" in log.read_text()
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
        _wait_for(lambda: _generation(beta) >= 1, proc, seconds=900)
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
    assert resume and min(resume.values()) >= 1  # trials continued from a generation past epoch 0, not from scratch
    assert len(set(resume.values())) == 1  # all from the same generation
    assert len(summary["final_val_acc"]) == 2
    assert "search was interrupted and resumed" in (out / "report.md").read_text()


def _without_times(path: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k != "time"} for line in path.read_text().splitlines()]


def test_a_search_killed_mid_way_resumes_to_the_schedule_of_an_uninterrupted_one(tmp_path):
    args = ["search", "demo", "--role", "teacher", *TINY_SEARCH, "--set", "search.population=4",
            "--set", "search.cpus_per_trial=0.5", "--set", "search.epochs=6"]
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    done = subprocess.run([sys.executable, "-m", "rolekd.cli.main", *args, "--out", str(whole)], capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    log = tmp_path / "cut.log"
    proc = _start(*args, "--out", str(cut), log=log)
    try:
        _wait_for(lambda: _generation(cut) >= 2, proc)
        os.killpg(proc.pid, signal.SIGKILL)  # driver, Ray and its workers: mid-generation 3
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert not (cut / "search_summary.json").exists()
    resumed = subprocess.run([sys.executable, "-m", "rolekd.cli.main", *args, "--out", str(cut), "--resume"],
                             capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "continuing at epoch" in resumed.stderr
    assert (cut / "schedule.json").read_bytes() == (whole / "schedule.json").read_bytes()
    assert _without_times(cut / "history.jsonl") == _without_times(whole / "history.jsonl")
    a, b = (json.loads((d / "search_summary.json").read_text()) for d in (whole, cut))
    assert a["final_val_acc"] == b["final_val_acc"] and a["best_trial"] == b["best_trial"]
    assert b["resumes"] and min(b["resumes"][0].values()) >= 2
    epochs = [[json.loads(line)["epoch"] for line in p.read_text().splitlines()]
              for p in sorted((cut / "trials").glob("*/progress.jsonl"))]
    assert epochs == [list(range(1, 7))] * 4  # the generation cut short is trained once in the records
