"""Ray sessions and "how many fit at once": the one place rolekd starts, joins and sizes Ray.

Floor 1 (docs/design.md): a search (``pba.run``) and ``rolekd run``'s trainings (``pipeline.parallel``) both enter
:func:`ray_session` and count slots with :func:`slots`, so the two cannot disagree. Ray is imported lazily: importing
this module costs nothing until a session starts.

Without an address rolekd always starts a Ray of its own (``ray.init(address="local")``), whatever else runs on the
machine: a ``ray start --head`` there, the address file a killed head leaves (``/tmp/ray/ray_current_cluster``) and
``RAY_ADDRESS`` are all ignored, so the session has exactly the resources asked for. A cluster is joined only when its
address is given (``--address``, ``search.address``).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
import time
from pathlib import Path
from typing import Any, Iterator, NamedTuple

AUTH_TOKEN_FILE = Path("~/.ray/auth_token")  # where `ray start` keeps the cluster's token (for messages)
AUTH_BANNER_LOGGER = "ray._private.authentication.authentication_token_setup"  # warns on every local start
TOLERANCE = 1e-9  # 0.1 + 0.2 CPUs still fit in 0.3
REACH_TIMEOUT_S = 10  # a TCP connect to the address before Ray is asked to join it
GCS_ATTEMPTS_ENV = "RAY_gcs_server_port_wait_time_s"  # how many GCS connects a joining driver tries (~40 s each)
GCS_ATTEMPTS = "1"  # Ray's default is 20: a GCS that never answers held the driver for ~14 minutes
LOOPBACK = ("localhost", "127.0.0.1", "::1")


class RayError(ValueError):
    """Ray could not be started or joined, or resources make no sense; one line saying what and what was expected."""


class ClusterResources(NamedTuple):
    """A running Ray's total CPUs and GPUs, and those of its largest node (what one task may take)."""

    cpus: float
    gpus: float
    node_cpus: int
    node_gpus: int


# ---- how many fit ------------------------------------------------------------------------------


def slots(cpus: float, gpus: float, cpus_each: float, gpus_each: float, cap: int | None = None) -> int:
    """How many units of (``cpus_each``, ``gpus_each``) fit in (``cpus``, ``gpus``), at most ``cap``; 0 when none.

    The one count behind a search's "does the population run at once" and the trainings' slots. A share of 0 does
    not bound the count (a CPU-only training fits regardless of GPUs).
    """
    if cpus_each < 0 or gpus_each < 0:
        raise RayError(f"slots: a unit of {cpus_each:g} CPU, {gpus_each:g} GPU; expected shares >= 0")
    bounds = [math.floor(have / each + TOLERANCE) for have, each in ((cpus, cpus_each), (gpus, gpus_each)) if each > 0]
    if cap:
        bounds.append(cap)
    if not bounds:
        raise RayError("slots: a unit of 0 CPU and 0 GPU with no cap; expected a CPU or GPU share, or a cap")
    return max(0, min(bounds))


def local_cpus(cpus_per_trial: float, max_concurrent: int | None) -> int:
    """CPUs of an embedded Ray: the machine's, or only what ``max_concurrent`` trials need.

    Concurrency is capped through resources, not Tune's ``max_concurrent_trials``: that one would
    create only the first trials and let them finish before the rest of the population exists.
    """
    cpus = os.cpu_count() or 1
    if max_concurrent:
        cpus = min(cpus, math.ceil(max_concurrent * cpus_per_trial))
    return max(cpus, math.ceil(cpus_per_trial))  # a trial asking for more CPUs than exist still runs


def local_gpus() -> int:
    """This machine's CUDA GPUs (torch imported only here: a CPU search need not pay for it)."""
    import torch

    return torch.cuda.device_count()


def cluster_resources() -> ClusterResources:
    """The running Ray's resources: a local one or a cluster's alive nodes (call inside :func:`ray_session`)."""
    import ray

    total = ray.cluster_resources()
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    node_cpus, node_gpus = max(((int(r.get("CPU", 0)), int(r.get("GPU", 0))) for r in nodes), default=(1, 0))
    return ClusterResources(float(total.get("CPU", 1)), float(total.get("GPU", 0)), node_cpus, node_gpus)


# ---- sessions ----------------------------------------------------------------------------------


@contextlib.contextmanager
def ray_session(address: str | None, num_cpus: int, num_gpus: int) -> Iterator[float]:
    """Join ``address``, reuse a running Ray, or start a local one with these resources for the ``with`` block
    (a search, or the pipeline's parallel trainings); a Ray this block started is shut down after it.

    Without ``address`` the local Ray is always a new one (see the module's docstring): another Ray on the machine
    would otherwise be joined and refuse ``num_cpus``. Yields the seconds spent starting or joining Ray (0 when it
    was already running).
    """
    import ray

    if ray.is_initialized():
        yield 0.0
        return
    t0 = time.perf_counter()
    kwargs: dict[str, Any] = dict(include_dashboard=False, log_to_driver=False, configure_logging=True,
                                  logging_level=logging.WARNING)
    with logger_level(AUTH_BANNER_LOGGER, logging.ERROR):
        if address:
            join_cluster(address, kwargs)
        else:
            ray.init(address="local", num_cpus=num_cpus, num_gpus=num_gpus, **kwargs)
    try:
        yield time.perf_counter() - t0
    finally:
        ray.shutdown()


def join_cluster(address: str, kwargs: dict[str, Any]) -> None:
    """``ray.init(address=...)`` with the cluster's token, a loopback address kept, a bounded wait and a one-line error.

    Token: since Ray 2.59 ``ray start`` turns token authentication on and keeps the token in ``~/.ray/auth_token``,
    but a driver joining by address sends it only with ``RAY_AUTH_MODE=token`` (unauthenticated, it gets "Failed to
    connect" after ~30 s). When the user set no mode and a token is at hand, rolekd sets it: a cluster without
    authentication accepts such a driver too.

    Bounded: Ray tries the GCS 20 times, ~40 s each, printing "Failed to connect to GCS" meanwhile; rolekd lets it try
    once (``RAY_gcs_server_port_wait_time_s=1`` unless the user set it), so a port that is not a GCS, or a head that
    died, is one line after ~40 s.
    """
    import ray

    _reachable(address)
    _enable_token_auth()
    try:
        with _gcs_attempts(), _loopback_kept(address):
            ray.init(address=address, **kwargs)
    except (ConnectionError, RuntimeError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise RayError(
            f"search.address {address}: cannot join the Ray cluster ({reason}); check that `ray start --head` runs "
            f"there on that port and that this machine has the cluster's token (RAY_AUTH_TOKEN or {AUTH_TOKEN_FILE}) "
            "when it uses token authentication") from None


def _enable_token_auth() -> None:
    try:  # Ray's own switch: sets RAY_AUTH_MODE=token and refreshes its cached config, if a token exists
        from ray._private.authentication.authentication_token_setup import maybe_enable_token_auth_if_token_available
    except ImportError:  # a Ray without token authentication
        return
    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


def _reachable(address: str) -> None:
    """A HOST:PORT nobody listens on is said at once (Ray itself retries for minutes before giving up)."""
    host, port = _host_port(address)
    if port is None:
        return  # ray://, auto: Ray resolves those itself
    try:
        socket.create_connection((host, port), timeout=REACH_TIMEOUT_S).close()
    except OSError as exc:
        raise RayError(f"search.address {address}: nothing answers there ({exc.strerror or exc}); check that "
                       "`ray start --head` runs on that machine and port, and that this machine can reach it") from None


def _host_port(address: str) -> tuple[str, int | None]:
    """``HOST:PORT`` split (brackets of an IPv6 host dropped); no port for ``ray://`` or ``auto``."""
    host, sep, port = address.rpartition(":")
    if "://" in address or not sep or not port.isdigit():
        return address, None
    return host.strip("[]"), int(port)


def is_loopback(address: str) -> bool:
    """Whether ``address``'s host is this machine's loopback: the hosts Ray swaps for the interface address."""
    return _host_port(address)[0].lower() in LOOPBACK


@contextlib.contextmanager
def _loopback_kept(address: str) -> Iterator[None]:
    """Keep a loopback address as given while Ray joins it.

    ``ray.init`` canonicalises the GCS address with ``services.resolve_ip_for_localhost``: 127.0.0.1 becomes the
    machine's interface address (``get_node_ip_address``), unless ``ray_constants.ENABLE_RAY_CLUSTER`` is off. A head
    started with ``--node-ip-address=127.0.0.1`` listens on loopback only, so the driver retried the interface address
    for minutes. ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` turns that constant off but is read when Ray is imported, so
    rolekd turns the constant itself off for the join. ``_node_ip_address`` is not passed: Ray rewrites it the same way,
    and Ray finds this machine's raylet by itself (a head whose node address is the interface one then still works).
    """
    from ray._private import ray_constants

    if not is_loopback(address) or not hasattr(ray_constants, "ENABLE_RAY_CLUSTER"):
        yield
        return
    saved = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved


@contextlib.contextmanager
def _gcs_attempts() -> Iterator[None]:
    """One GCS connect attempt for the join (the user's own ``RAY_gcs_server_port_wait_time_s`` wins)."""
    if GCS_ATTEMPTS_ENV in os.environ:
        yield
        return
    os.environ[GCS_ATTEMPTS_ENV] = GCS_ATTEMPTS
    try:
        yield
    finally:
        os.environ.pop(GCS_ATTEMPTS_ENV, None)


@contextlib.contextmanager
def logger_level(name: str, level: int) -> Iterator[None]:
    """Set logger ``name``'s level for the block (Ray's and Tune's chatter), then restore it."""
    logger = logging.getLogger(name)
    saved = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(saved)
