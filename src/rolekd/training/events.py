"""A training's per-epoch record: ``metrics.jsonl`` (appended) and TensorBoard scalars beside it.

(Provisional: the house issue's version replaces this file; the API stays.)
"""

from __future__ import annotations

import json
import numbers
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_text, make_dirs


class MetricsLog:
    """metrics.jsonl (appended, one JSON object per line) + TensorBoard scalars of every numeric value at
    step=record['epoch']."""

    def __init__(self, folder: str | Path, resume_epoch: int | None = None, filename: str = "metrics.jsonl") -> None:
        self.folder = make_dirs(folder)
        self.path = self.folder / filename
        kept = [r for r in self.rows() if resume_epoch is not None and r.get("epoch", 0) <= resume_epoch]
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))
        self._writer: Any = None

    def rows(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        rows = []
        for line in self.path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:
                break  # a torn last line from a kill
        return rows

    def append(self, record: dict[str, Any]) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self._writer is None:
            from tensorboardX import SummaryWriter

            self._writer = SummaryWriter(str(self.folder))
        step = int(record.get("epoch", 0))
        for key, value in record.items():
            if isinstance(value, numbers.Real) and not isinstance(value, bool) and key != "epoch":
                self._writer.add_scalar(key, float(value), step)
        self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> "MetricsLog":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
