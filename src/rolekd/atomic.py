"""Atomic file writes: write a temp sibling, fsync, then ``os.replace`` — a reader (or a resumed run)
never sees half a file. Used by every layer that writes: checkpoints, schedules, metrics, plots."""

from __future__ import annotations

import json
import os
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator


class OutputPathError(ValueError):
    """An output folder cannot be made: one line naming the path and what is in the way."""


def check_folder_path(path: str | Path, what: str = "output folder") -> Path:
    """Refuse, before any work, a folder path that is (or lies under) an existing file."""
    path = Path(path)
    blocker = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        where = "is an existing file" if blocker == path else f"lies under the file {blocker}"
        raise OutputPathError(f"{what} {path} {where}; expected a folder (or a path where one can be made)")
    return path


def make_dirs(path: str | Path, what: str = "output folder") -> Path:
    """``mkdir -p``, but a file in the way or a missing permission is one line naming the path, not an OSError."""
    path = check_folder_path(path, what)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputPathError(f"{what} {path} cannot be made ({exc.strerror}); expected a writable location") from None
    return path


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path beside ``path``; on success it replaces ``path``, on error it is removed."""
    path = Path(path)
    make_dirs(path.parent, f"folder for {path.name}")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_bytes(path: str | Path, write: Callable[[Any], Any]) -> Path:
    """Call ``write(binary_file)`` on a temp file, fsync it, then move it over ``path``."""
    with atomic_path(path) as tmp:
        with open(tmp, "xb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, lambda f: f.write(text.encode()))


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2) + "\n")
