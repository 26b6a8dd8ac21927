"""A real Ray cluster on loopback (issue 17): `rolekd search --address` joins a head started with `ray start`
(token authentication on, as Ray 2.60 starts it) and its trials run there; a cluster that is not there, or a port that
is not a GCS, is one line.

The head is started as on a laptop (``conftest.LOOPBACK_HEAD``: its GCS listens on 127.0.0.1 only); rolekd runs with no
Ray environment variable at all: it keeps the loopback address itself (``raycluster._loopback_kept``). The head is
torn down by the PIDs it started (never ``ray stop``, which would stop every Ray on the machine).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest
from conftest import free_port as _free_port

pytestmark = pytest.mark.slow

RAY_ENV = ("RAY_ADDRESS", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_gcs_server_port_wait_time_s")


@pytest.fixture
def ray_head(start_ray_head):
    return start_ray_head(loopback_only=True)


def _rolekd(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in RAY_ENV}  # a plain shell: no Ray switch set by hand
    return subprocess.run([sys.executable, "-m", "rolekd.cli.main", *args], capture_output=True, text=True,
                          timeout=600, env=env)


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


def _not_a_gcs(seconds: float) -> tuple[int, list[float], threading.Event]:
    """A loopback port that accepts TCP connections and says nothing (as a web server, or a GCS that hangs), for
    ``seconds`` at most (the event ends it sooner); the list gets the time of each connection."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.5)
    stop, accepted = threading.Event(), []

    def serve() -> None:
        held, t0 = [], time.monotonic()
        while not stop.is_set() and time.monotonic() - t0 < seconds:
            try:
                held.append(server.accept()[0])
                accepted.append(time.monotonic())
            except TimeoutError:
                continue
        for conn in held:
            conn.close()
        server.close()

    threading.Thread(target=serve, daemon=True).start()
    return server.getsockname()[1], accepted, stop


def test_a_port_that_is_not_a_gcs_is_one_line_naming_the_address_within_a_minute(tmp_path):
    port, accepted, stop = _not_a_gcs(300)
    try:
        r = _rolekd("search", "demo", "--role", "teacher", "--address", f"127.0.0.1:{port}",
                    "--set", "search.population=2", "--set", "search.epochs=1", "--out", str(tmp_path / "s"))
        gave_up = time.monotonic()
    finally:
        stop.set()
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-3000:]
    (line,) = [x for x in r.stderr.splitlines() if x.startswith("rolekd: error:")]
    assert f"search.address 127.0.0.1:{port}: cannot join the Ray cluster (" in line, line
    assert accepted, "rolekd never connected"
    waited = gave_up - accepted[0]  # from its first connection (the reachability check), not counting its start-up
    assert waited < 60, f"gave up {waited:.0f} s after its first connection"  # Ray alone: 20 attempts of ~40 s


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
