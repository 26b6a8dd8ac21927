"""Shared fixtures: small generated datasets in the real on-disk formats (never a download)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rolekd.data.cifar import write_synthetic_cifar as write_cifar  # noqa: F401  (tests import it from here)

torch.set_num_threads(2)


@pytest.fixture
def cifar_dir(tmp_path: Path) -> Path:
    write_cifar(tmp_path, "cifar10")
    return tmp_path


# ---- a real Ray head on loopback, torn down by its own PIDs ---------------------------------------------------

LOOPBACK_HEAD = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}  # the head's node address 127.0.0.1, its GCS on loopback only


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pids_of(marker: str) -> list[int]:
    import os

    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if marker.encode() in cmdline.read_bytes() and int(cmdline.parent.name) != os.getpid():
                pids.append(int(cmdline.parent.name))
        except OSError:
            continue
    return pids


@pytest.fixture
def start_ray_head():
    """``start(loopback_only, cpus)`` runs ``ray start --head --node-ip-address=127.0.0.1`` in a temp dir of its own and
    gives (``127.0.0.1:PORT``, that dir). ``loopback_only`` starts it as on a laptop (``LOOPBACK_HEAD``): its GCS listens
    on 127.0.0.1 only; else Ray gives the head the machine's interface address. Every head is killed by the PIDs that
    name its temp dir (never ``ray stop``, which would stop every Ray on the machine, other users' too)."""
    import os
    import shutil
    import signal
    import subprocess
    import sys
    import tempfile

    temps: list[str] = []

    def start(loopback_only: bool = True, cpus: int = 2) -> tuple[str, Path]:
        temp = tempfile.mkdtemp(prefix="rkray", dir="/tmp")  # short: Ray's socket paths must fit 107 characters
        temps.append(temp)
        port = free_port()
        env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", *LOOPBACK_HEAD)}
        ray_cli = str(Path(sys.executable).with_name("ray"))
        started = subprocess.run([ray_cli, "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1",
                                  f"--num-cpus={cpus}", "--include-dashboard=false", f"--temp-dir={temp}"],
                                 env={**env, **(LOOPBACK_HEAD if loopback_only else {})}, capture_output=True,
                                 text=True, timeout=180)
        assert started.returncode == 0, started.stderr[-2000:]
        return f"127.0.0.1:{port}", Path(temp)

    yield start
    for temp in temps:
        for pid in _pids_of(temp):  # gcs_server, raylet and the agents name the session folder in their arguments
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(temp, ignore_errors=True)
