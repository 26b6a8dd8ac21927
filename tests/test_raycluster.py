"""rolekd.raycluster: how many fit at once, and Ray sessions that start a Ray of their own (another Ray on the machine,
a stale address file or RAY_ADDRESS notwithstanding) or join a loopback head with no environment variable."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import ray
from conftest import free_port

from rolekd import raycluster
from rolekd.raycluster import RayError, slots


@pytest.fixture(autouse=True)
def _ray_down():
    yield
    if ray.is_initialized():
        ray.shutdown()


def test_slots_count_what_fits_in_cpus_and_gpus():
    assert slots(8, 0, 8.0, 0) == 1
    assert slots(8, 0, 2.0, 0) == 4
    assert slots(8, 0, 2.0, 0, cap=3) == 3  # pipeline.max_parallel
    assert slots(16, 2, 1.0, 1.0) == 2  # GPUs bound it
    assert slots(16, 1, 0.5, 0.25) == 4  # shares of one GPU
    assert slots(16, 0, 1.0, 0.5) == 0  # a GPU share where there is none
    assert slots(2, 0, 4.0, 0) == 0  # a unit larger than the machine: the caller decides whether it runs alone
    assert slots(0.3, 0, 0.1, 0) == 3  # 0.3 / 0.1 is 2.9999999999999996 in floats
    assert slots(1.0, 0, 0.1, 0) == 10  # 1.0 // 0.1 is 9.0 in floats: a tolerance after // would not see it
    assert slots(0.29, 0, 0.1, 0) == 2
    assert slots(4, 8, 0, 2.0) == 4  # a CPU share of 0 does not bound it
    assert slots(-1.0, 0, 1.0, 0) == 0  # less than nothing left beside the trainings running


def test_slots_refuse_a_unit_that_takes_nothing_or_less():
    with pytest.raises(RayError, match=r"^slots: a unit of 0 CPU and 0 GPU with no cap; expected a CPU or GPU share"):
        slots(8, 1, 0, 0)
    assert slots(8, 1, 0, 0, cap=5) == 5
    with pytest.raises(RayError, match=r"^slots: a unit of -1 CPU, 0 GPU; expected shares >= 0$"):
        slots(8, 1, -1, 0)


def test_local_cpus_are_the_machines_or_what_max_concurrent_trials_take(monkeypatch):
    monkeypatch.setattr(raycluster.os, "cpu_count", lambda: 8)
    assert raycluster.local_cpus(1.0, None) == 8
    assert raycluster.local_cpus(1.5, 3) == 5  # ceil(4.5)
    assert raycluster.local_cpus(16.0, None) == 16  # a trial larger than the machine still runs


def test_only_loopback_hosts_are_kept_and_only_for_the_join():
    from ray._private import ray_constants, services

    assert [raycluster.is_loopback(a) for a in ("127.0.0.1:6379", "localhost:1", "[::1]:6379", "LOCALHOST:2")] == [
        True, True, True, True]
    assert not any(raycluster.is_loopback(a) for a in ("10.0.0.2:6379", "ray://127.0.0.1:10001", "auto", "head:1"))
    saved = ray_constants.ENABLE_RAY_CLUSTER
    with raycluster._loopback_kept("127.0.0.1:6379"):
        assert services.canonicalize_bootstrap_address("127.0.0.1:6379") == "127.0.0.1:6379"  # what ray.init joins
    assert ray_constants.ENABLE_RAY_CLUSTER == saved
    with raycluster._loopback_kept("10.0.0.2:6379"):
        assert ray_constants.ENABLE_RAY_CLUSTER == saved


def test_a_join_tries_the_gcs_once_unless_the_user_said_otherwise(monkeypatch):
    monkeypatch.delenv(raycluster.GCS_ATTEMPTS_ENV, raising=False)
    with raycluster._gcs_attempts():
        assert os.environ[raycluster.GCS_ATTEMPTS_ENV] == "1"
    assert raycluster.GCS_ATTEMPTS_ENV not in os.environ
    monkeypatch.setenv(raycluster.GCS_ATTEMPTS_ENV, "7")
    with raycluster._gcs_attempts():
        assert os.environ[raycluster.GCS_ATTEMPTS_ENV] == "7"
    assert os.environ[raycluster.GCS_ATTEMPTS_ENV] == "7"


def test_an_address_nobody_listens_on_is_one_line_at_once():
    with pytest.raises(RayError, match=r"^search\.address 127\.0\.0\.1:\d+: nothing answers there \(.*\); check that "
                                       r"`ray start --head` runs"):
        raycluster._reachable(f"127.0.0.1:{free_port()}")


@pytest.fixture
def ray_tmpdir(monkeypatch):
    """A short temp dir as ``RAY_TMPDIR`` (where Ray reads ``ray/ray_current_cluster`` and keeps its sessions), so a
    test neither reads nor leaves anything in the machine's ``/tmp/ray``."""
    import shutil
    import tempfile
    from pathlib import Path

    temp = tempfile.mkdtemp(prefix="rktmp", dir="/tmp")  # short: Ray's socket paths must fit 107 characters
    monkeypatch.setenv("RAY_TMPDIR", temp)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    yield Path(temp)
    shutil.rmtree(temp, ignore_errors=True)


def _address_file(points_at: str) -> None:
    """Write the file a ``ray start --head`` leaves in Ray's temp dir (found the way ``ray.init()`` finds it)."""
    from ray._common.utils import get_ray_address_file

    path = Path(get_ray_address_file(None))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(points_at)


def _fresh_local_ray_of_one_cpu(not_at: str) -> None:
    with raycluster.ray_session(None, 1, 0) as started_s:
        assert started_s > 0
        assert ray.cluster_resources()["CPU"] == 1 and not ray.cluster_resources().get("GPU")
        port = ray.get_runtime_context().gcs_address.rpartition(":")[2]
        assert port != not_at.rpartition(":")[2]  # not the other Ray's GCS
    assert not ray.is_initialized()


@pytest.mark.slow
def test_without_an_address_a_fresh_ray_starts_beside_a_running_head_and_ray_address(start_ray_head, ray_tmpdir,
                                                                                     monkeypatch):
    address, _ = start_ray_head(loopback_only=False, cpus=2)
    _address_file(address)  # as after a plain `ray start --head` in the default temp dir
    monkeypatch.setenv("RAY_ADDRESS", address)  # ignored too: no address was given to rolekd
    _fresh_local_ray_of_one_cpu(not_at=address)
    monkeypatch.delenv("RAY_ADDRESS")
    _fresh_local_ray_of_one_cpu(not_at=address)


@pytest.mark.slow
def test_without_an_address_a_stale_address_file_left_by_a_killed_head_is_ignored(ray_tmpdir):
    dead = f"127.0.0.1:{free_port()}"
    _address_file(dead)  # `ray start` wrote it; its head was killed since
    assert (ray_tmpdir / "ray" / "ray_current_cluster").read_text() == dead
    _fresh_local_ray_of_one_cpu(not_at=dead)


@pytest.mark.slow
def test_a_head_with_the_machines_address_is_joined_at_its_loopback_address_too(start_ray_head, ray_tmpdir,
                                                                                monkeypatch):
    """The other kind of loopback head: ``ray start --node-ip-address=127.0.0.1`` without the laptop switch gives the
    head the interface address, its GCS listening everywhere; keeping 127.0.0.1 must not break joining it."""
    monkeypatch.delenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", raising=False)
    address, _ = start_ray_head(loopback_only=False, cpus=2)
    with raycluster.ray_session(address, 1, 0):
        assert ray.cluster_resources()["CPU"] == 2  # the head's, not a local Ray's
        assert ray.get(ray.remote(lambda: os.getpid()).remote()) != os.getpid()
    assert not ray.is_initialized()
