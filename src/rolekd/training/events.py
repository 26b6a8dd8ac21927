"""A training's metrics as it goes: ``metrics.jsonl`` (one JSON object per epoch, appended, so a long run writes each
line once and a kill leaves at most a torn last line) and the same numbers as TensorBoard scalars beside it, so
``tensorboard --logdir RUN`` shows live curves of every training in a run.

Used by :func:`rolekd.training.fit` and by search trials; it knows nothing of what the numbers mean.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from ..atomic import DISK_FULL, append_jsonl, atomic_write_text, disk_full, make_dirs, read_jsonl

EVENTS_PREFIX = "events.out.tfevents."  # TensorBoard finds event files by this name


class MetricsLog:
    """metrics.jsonl (appended, one JSON object per line) + TensorBoard scalars of every numeric value at
    step=record['epoch']."""

    def __init__(self, folder: str | Path, resume_epoch: int | None = None, filename: str = "metrics.jsonl") -> None:
        """``resume_epoch`` None: start afresh (an old file and its event files are removed); an int: keep the rows
        with ``epoch <= resume_epoch`` (rewritten once, only when some are dropped) and hide later steps of the old
        event files in TensorBoard, as a resumed run replays them."""
        self.folder = make_dirs(folder)
        self.path = self.folder / filename
        self._suffix = f".{Path(filename).stem}"  # event files of this log only: several logs may share a folder
        self._writer: Any = None
        self._failed = False
        self._purge_from = None if resume_epoch is None else int(resume_epoch) + 1
        if resume_epoch is None:
            self.path.unlink(missing_ok=True)
            for old in self.folder.glob(f"{EVENTS_PREFIX}*{self._suffix}"):
                old.unlink()
        else:
            self._truncate(int(resume_epoch))

    def _truncate(self, epoch: int) -> None:
        """Drop rows past ``epoch`` (and a torn last line) in one atomic rewrite, when there are any."""
        if not self.path.is_file():
            return
        kept = [r for r in read_jsonl(self.path) if r.get("epoch", 0) <= epoch]
        text = "".join(json.dumps(r) + "\n" for r in kept)
        if self.path.read_text() != text:
            atomic_write_text(self.path, text)

    def rows(self) -> list[dict]:
        """What the file holds now (a torn last line skipped)."""
        return read_jsonl(self.path)

    def append(self, record: dict) -> None:
        """One line in ``metrics.jsonl``, then its numbers as scalars at ``step=record['epoch']``; one flush each."""
        if not isinstance(record.get("epoch"), int) or isinstance(record.get("epoch"), bool):
            raise ValueError(f"a metrics record needs an integer 'epoch' (the step of its scalars); got "
                             f"{record.get('epoch')!r} in a record with keys {sorted(record)}")
        append_jsonl(self.path, record)
        self._write_scalars(record)

    def _write_scalars(self, record: dict) -> None:
        from tensorboardX.proto.event_pb2 import Event
        from tensorboardX.proto.summary_pb2 import Summary

        values = [Summary.Value(tag=k, simple_value=float(v)) for k, v in record.items()
                  if k != "epoch" and isinstance(v, (int, float)) and not isinstance(v, bool)]
        if not values:
            return
        try:
            writer = self._events()
            writer.write_event(Event(wall_time=time.time(), step=record["epoch"], summary=Summary(value=values)))
            writer.flush()
        except OSError as exc:
            self._failed = True
            if exc.errno in DISK_FULL:
                events = self.event_files
                raise disk_full(events[-1] if events else self.folder / EVENTS_PREFIX, None) from None
            raise

    def _events(self) -> Any:
        """The event file, opened at the first scalar (a log that never gets one leaves no empty file); a resumed
        log starts with TensorBoard's purge marker, which hides the old files' steps from ``resume_epoch + 1`` on."""
        if self._writer is None:
            from tensorboardX.event_file_writer import EventsWriter
            from tensorboardX.proto.event_pb2 import Event, SessionLog

            unique = f".{time.time_ns()}.{os.getpid()}"  # the name's time has whole seconds; sorts as written
            self._writer = EventsWriter(str(self.folder / "events"), unique + self._suffix)
            if self._purge_from is not None:
                self._writer.write_event(Event(step=self._purge_from, session_log=SessionLog(status=SessionLog.START)))
        return self._writer

    @property
    def event_files(self) -> list[Path]:
        """This log's TensorBoard event files in the folder, oldest first."""
        return sorted(self.folder.glob(f"{EVENTS_PREFIX}*{self._suffix}"))

    def close(self) -> None:
        """Close the event file (a file that already failed to write is closed without raising again)."""
        writer, self._writer = self._writer, None
        if writer is None:
            return
        try:
            writer.close()
        except OSError:
            if not self._failed:
                raise

    def __enter__(self) -> "MetricsLog":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
