"""The output folder of every command (`rolekd run`, `train`, `distill`, `search`): it belongs to one config.

``config.yaml`` is written when the folder is claimed; ``--resume`` compares against it, so a run is never
continued with another lr or another data subset without a word. A claimed folder is also locked (``.lock``) for
as long as the command runs, so two processes never write one folder.
"""

from __future__ import annotations

import functools
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import IO, Any, Callable, TypeVar

from ..atomic import atomic_write_text, make_dirs
from ..config import ConfigError, ExperimentConfig, dump_config, require_same_config

CONFIG_FILE = "config.yaml"
LOCK_FILE = ".lock"  # flock'd by the process that claimed the folder; holds its pid and command for the message

F = TypeVar("F", bound=Callable[..., Any])
_held: dict[Path, IO[str]] = {}  # the folders this process has locked, by resolved path


class OutputFolderError(ValueError):
    """The output folder holds another run: one line saying how to continue it or where to go instead."""


def lock_folder(out: str | Path) -> Path:
    """Claim ``out`` for this process: an exclusive ``flock`` on ``out/.lock``, released by the kernel when the
    process ends however it ends (a kill -9 leaves nothing stuck), or at the end of a :func:`releases_claims`
    function. A folder another live process holds is one line naming that process. Only the folder itself is
    locked: Ray workers of the same run write into its subfolders freely."""
    out = make_dirs(out, "--out")
    key = out.resolve()
    if key in _held:
        return out
    try:
        import fcntl
    except ImportError:  # no flock on this platform: folders are not locked
        return out
    handle = open(out / LOCK_FILE, "a+")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = _holder(handle.read())
        handle.close()
        raise OutputFolderError(f"{out} is in use by {holder}; wait for it to finish (or stop it) or choose "
                                "another --out") from None
    except OSError:  # a file system without locks (some network mounts): the folder is not locked
        handle.close()
        return out
    handle.seek(0)
    handle.truncate()
    handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "command": _command(),
                             "since": time.strftime("%Y-%m-%d %H:%M:%S")}) + "\n")
    handle.flush()
    _held[key] = handle
    return out


def _command() -> str:
    """This process's command line as the user typed it (``rolekd train ...``, not ``.../cli/main.py train ...``)."""
    args = list(sys.argv)
    if args and (Path(args[0]).name in ("rolekd", "main.py", "__main__.py")):
        args[0] = "rolekd"
    return " ".join(args)


def _holder(text: str) -> str:
    """``process 123 on host (rolekd train demo --out x, since ...)`` from a lock file's content."""
    try:
        info = json.loads(text)
        return f"process {info['pid']} on {info['host']} ({info['command']}, since {info['since']})"
    except (ValueError, KeyError, TypeError):
        return "another process"  # it is writing its details right now


def release_folder(out: str | Path) -> None:
    """Give up this process's claim on ``out`` (nothing when it holds none)."""
    handle = _held.pop(Path(out).resolve(), None)
    if handle is not None:
        handle.close()


def releases_claims(func: F) -> F:
    """A command: the folders it claims are released when it returns or raises (a Python session that ran
    ``rolekd.train`` does not keep its folder from a later ``rolekd train --resume``)."""
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        before = set(_held)
        try:
            return func(*args, **kwargs)
        finally:
            for key in set(_held) - before:
                release_folder(key)
    return wrapper  # type: ignore[return-value]


def claim_folder(cfg: ExperimentConfig, out: str | Path, resume: bool, progress: str) -> Path:
    """Lock ``out`` (:func:`lock_folder`) and record ``cfg`` in it. Once it holds progress (``progress``, e.g.
    ``last.pt``), only ``resume`` with the same config may continue it; before that (a run that failed early) it
    is claimed anew."""
    out = lock_folder(out)
    saved = out / CONFIG_FILE
    if (out / progress).exists():
        if not resume:
            raise OutputFolderError(f"{out} already holds a run ({progress}); pass --resume to continue it or choose "
                                    "another --out")
        if saved.is_file():
            try:
                require_same_config(saved, cfg, out)
            except ConfigError as exc:
                raise OutputFolderError(str(exc)) from None
            return out
    atomic_write_text(saved, dump_config(cfg))  # a new folder, or one made before folders recorded their config
    return out


def seed_folder(folder: str | Path, seed: int) -> Path:
    """Where one seed of a row trains inside a run folder (``<row folder>/seed<N>``), for every run layout."""
    return Path(folder) / f"seed{seed}"


TEACHER_FILE = "teacher.json"


def claim_teacher(out: Path, teacher_path: str | Path, progress: str) -> None:
    """A folder distilled from a teacher belongs to that teacher too: the file's SHA-256 is kept beside
    ``config.yaml``, and continuing the folder (``progress`` exists) from another teacher file is refused."""
    import hashlib
    import json

    digest = hashlib.sha256(Path(teacher_path).read_bytes()).hexdigest()
    record = out / TEACHER_FILE
    if (out / progress).exists() and record.is_file():
        saved = json.loads(record.read_text())
        if saved.get("sha256") != digest:
            raise OutputFolderError(
                f"--resume: {out} was distilled from the teacher {saved.get('path')} (sha256 {saved.get('sha256', '')[:12]}), "
                f"not from --teacher {teacher_path} (sha256 {digest[:12]}); pass that teacher or choose another --out")
        return
    atomic_write_text(record, json.dumps({"path": str(Path(teacher_path).resolve()), "sha256": digest}) + "\n")
