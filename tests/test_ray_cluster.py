"""A real Ray cluster on loopback (issue 17): `rolekd search --address` joins a head started with `ray start`
(token authentication on, as Ray 2.60 starts it) and its trials run there; a cluster that is not there is one line.

All of Ray's traffic stays on 127.0.0.1: ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` stops Ray from swapping the loopback
address for the machine's interface address. The head is torn down by the PIDs it started (never ``ray stop``,
which would stop every Ray on the machine).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

LOOPBACK_ONLY = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pids_of(marker: str) -> list[int]:
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if marker.encode() in cmdline.read_bytes():
                pids.append(int(cmdline.parent.name))
        except OSError:
            continue
    return pids


@pytest.fixture
def ray_head():
    temp = tempfile.mkdtemp(prefix="rkray", dir="/tmp")  # short: Ray's socket paths must fit 107 characters
    port = _free_port()
    env = {**os.environ, **LOOPBACK_ONLY}
    ray_cli = str(Path(sys.executable).with_name("ray"))
    started = subprocess.run([ray_cli, "start", "--head", f"--port={port}", "--num-cpus=2", "--include-dashboard=false",
                              f"--temp-dir={temp}"], env=env, capture_output=True, text=True, timeout=180)
    assert started.returncode == 0, started.stderr[-2000:]
    try:
        yield f"127.0.0.1:{port}", Path(temp)
    finally:
        for pid in _pids_of(temp):  # gcs_server, raylet and the agents name the session folder in their arguments
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _rolekd(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rolekd.cli.main", *args], capture_output=True, text=True,
                          timeout=600, env={**os.environ, **LOOPBACK_ONLY})


def test_search_joins_a_token_authenticated_cluster_and_runs_its_trials_there(ray_head, tmp_path):
    address, temp = ray_head
    out = tmp_path / "search"
    r = _rolekd("search", "demo", "--role", "teacher", "--address", address, "--set", "search.population=2",
                "--set", "search.epochs=2", "--set", "search.cpus_per_trial=1", "--set", "teacher.model_args.width=8",
                "--out", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"on Ray cluster {address}" in r.stderr  # not an embedded Ray
    summary = json.loads((out / "search_summary.json").read_text())
    assert len(summary["final_val_acc"]) == 2 and summary["failed_trials"] == []
    workers = list(temp.rglob("worker-*"))  # the trials' processes were the head's workers, logging in its session
    assert workers, f"no worker of the cluster at {temp} ran anything"


def test_a_cluster_that_is_not_there_is_one_line_naming_what_to_check(tmp_path):
    t0 = time.perf_counter()
    r = _rolekd("search", "demo", "--role", "teacher", "--address", f"127.0.0.1:{_free_port()}",
                "--set", "search.population=2", "--set", "search.epochs=1", "--out", str(tmp_path / "s"))
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-3000:]
    (line,) = [x for x in r.stderr.splitlines() if x.startswith("rolekd: error:")]
    assert "nothing answers there" in line and "ray start --head" in line
    assert time.perf_counter() - t0 < 120


RUN_TINY = ["--set", "teacher.model_args.width=4", "--set", "student.model_args.width=4",
            "--set", "teacher.train.epochs=2", "--set", "student.train.epochs=2",
            "--set", "data.reduced_train=60", "--set", "data.reduced_val=60",
            "--set", "search.population=2", "--set", "search.epochs=1", "--set", "search.cpus_per_trial=1",
            "--set", "distill.method=soft", "--set", "pipeline.baselines=[student_kd]",
            "--set", "pipeline.stage_alpha.schedule=pba-rcifar10",
            "--set", "teacher.train.cpus=1", "--set", "student.train.cpus=1"]


def test_run_trains_on_the_cluster_and_reports_what_a_local_run_does(ray_head, tmp_path):
    address, temp = ray_head
    r = _rolekd("run", "demo", "--address", address, *RUN_TINY, "--out", str(tmp_path / "cluster"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"on the Ray cluster at {address}" in r.stderr and f"on Ray cluster {address}" in r.stderr
    local = _rolekd("run", "demo", *RUN_TINY, "--set", "pipeline.max_parallel=1", "--out", str(tmp_path / "local"))
    assert local.returncode == 0, local.stderr[-3000:]

    def rows(run: str) -> dict:
        report = json.loads((tmp_path / run / "report.json").read_text())
        return {row["key"]: row["last_per_seed"] for row in report["rows"]}

    assert rows("cluster") == rows("local") and len(rows("local")) == 3
    records = (tmp_path / "cluster" / "trainings.jsonl").read_text().splitlines()
    assert len(records) == 3  # every training ran as a task of the cluster
