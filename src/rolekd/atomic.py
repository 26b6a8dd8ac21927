"""Atomic file writes: write a temp sibling, fsync, then ``os.replace`` — a reader (or a resumed run)
never sees half a file. Used by every layer that writes: checkpoints, schedules, metrics, plots.

Logs that grow (``metrics.jsonl``) are appended a line at a time instead (:func:`append_jsonl`): a kill leaves at
most a torn last line, which :func:`read_jsonl` skips and the next append cuts off. A full disk is one line
(:class:`DiskFullError`) naming the file and the space it needed; the file is left as it was."""

from __future__ import annotations

import errno
import json
import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator


class DiskFullError(OSError):
    """No space left for a write: one line naming the file, what it needed and what is free; the file is unchanged."""

    def __str__(self) -> str:
        return str(self.strerror)  # OSError's own adds "[Errno 28] "


DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


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
    """Call ``write(binary_file)`` on a temp file, fsync it, then move it over ``path``; a full disk is a
    :class:`DiskFullError` and ``path`` keeps its old content."""
    try:
        with atomic_path(path) as tmp:
            with open(tmp, "xb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
    except Exception as exc:
        if not is_disk_full(exc):
            raise
        raise disk_full(path, _size_of(write)) from None
    return Path(path)


def is_disk_full(exc: BaseException | None) -> bool:
    """Whether ``exc`` or an error it was raised from is ENOSPC/EDQUOT (torch.save raises its own RuntimeError
    from the OSError)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, DiskFullError) or (isinstance(exc, OSError) and exc.errno in DISK_FULL):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


def disk_full(path: str | Path, needed: int | None) -> DiskFullError:
    """The one-line error for ``path``: the bytes it needed (None: not known) and the bytes free beside it."""
    path = Path(path)
    folder = next((p for p in (path.parent, *path.parent.parents) if p.exists()), Path("."))
    try:
        free = f"{human_bytes(shutil.disk_usage(folder).free)} free"
    except OSError:
        free = "free space unknown"
    need = f"needs {human_bytes(needed)}" if needed is not None else "needs more space"
    return DiskFullError(errno.ENOSPC, f"no space left on device to write {path}: {need}, {free} in {folder} "
                                       "(nothing half-written was left)")


def human_bytes(n: int) -> str:
    """``1.5 MB``: sizes in messages."""
    size = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"  # unreachable


class _Counter:
    """A file that counts what is written to it: the size of a write that did not fit, without keeping it."""

    def __init__(self) -> None:
        self.size = 0

    def write(self, data: bytes) -> int:
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        pass


def _size_of(write: Callable[[Any], Any]) -> int | None:
    counter = _Counter()
    try:
        write(counter)
    except Exception:  # noqa: BLE001 - only a number for the message
        return None
    return counter.size


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, lambda f: f.write(text.encode()))


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def append_jsonl(path: str | Path, record: Any) -> None:
    """Append ``record`` as one JSON line and fsync. A torn last line (a kill mid-write) is cut off first, and a
    full disk is a :class:`DiskFullError` that leaves the file as it was."""
    path = Path(path)
    make_dirs(path.parent, f"folder for {path.name}")
    line = (json.dumps(record) + "\n").encode()
    with open(path, "ab+", buffering=0) as f:  # unbuffered: a failed write raises here, not again at close
        size = _whole_lines_end(f)
        try:
            view = memoryview(line)
            while view:
                view = view[f.write(view):]
            os.fsync(f.fileno())
        except OSError as exc:
            f.truncate(size)  # no half line left behind
            if exc.errno in DISK_FULL:
                raise disk_full(path, len(line)) from None
            raise


def _whole_lines_end(f: Any) -> int:
    """The end of the last whole line of the open file ``f``, after cutting a torn last line off."""
    end = f.seek(0, os.SEEK_END)
    if end == 0:
        return 0
    f.seek(max(0, end - 1))
    if f.read(1) == b"\n":
        return end
    f.seek(0)
    keep = f.read().rfind(b"\n") + 1
    f.truncate(keep)
    return keep


def read_jsonl(path: str | Path) -> list[Any]:
    """The JSON lines of ``path`` ([] when it does not exist); a torn last line is skipped."""
    try:
        lines = Path(path).read_bytes().split(b"\n")
    except FileNotFoundError:
        return []
    rows = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except ValueError:
            if i < len(lines) - 1:  # only the last line may be torn; anything else is a damaged file
                raise ValueError(f"{path}: line {i + 1} is not JSON; expected one JSON object per line") from None
    return rows
