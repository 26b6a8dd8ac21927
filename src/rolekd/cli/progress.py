"""Progress display for long work: a live bar on a terminal, one line per epoch otherwise."""

from __future__ import annotations

import sys
import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=True, highlight=False, soft_wrap=True)


def _fmt_epoch(r: dict[str, Any]) -> str:
    parts = [f"epoch {r['epoch']:>3}/{r['epochs']}", f"loss {r['train_loss']:.4f}", f"train {100 * r['train_acc']:.1f}%"]
    if "val_acc" in r:
        parts.append(f"val {100 * r['val_acc']:.2f}%")
    if r.get("best_epoch"):  # none yet before the first evaluation (train.eval_every)
        parts.append(f"best {100 * r['best_acc']:.2f}% (ep {r['best_epoch']})")
    parts.append(f"{r['images_per_s']:.0f} img/s")
    return "  ".join(parts)


class TrainingProgress:
    """Callback for :func:`rolekd.training.fit`: ``with TrainingProgress(label, epochs) as cb: fit(..., callback=cb)``."""

    def __init__(self, label: str, epochs: int, quiet: bool = False) -> None:
        self.label, self.epochs, self.quiet = label, epochs, quiet
        self.live = console.is_terminal and not quiet
        self._progress: Progress | None = None
        self._task = None
        self._t0 = time.perf_counter()

    def __enter__(self) -> "TrainingProgress":
        if self.live:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[status]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                console=console, transient=False,
            )
            self._progress.start()
            self._task = self._progress.add_task(self.label, total=self.epochs, status="")
        return self

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.stop()

    def __call__(self, kind: str, info: dict[str, Any]) -> None:
        if kind == "resume":
            self._say(f"{self.label}: resuming after epoch {info['epoch']}")
            if self._progress is not None:
                self._progress.update(self._task, completed=info["epoch"])
        elif kind == "step" and self._progress is not None:
            frac = info["step"] / info["steps"]
            self._progress.update(
                self._task, completed=info["epoch"] + frac,
                status=f"loss {info['loss']:.3f}  {info['images_per_s']:.0f} img/s",
            )
        elif kind == "epoch":
            if self._progress is not None:
                self._progress.update(self._task, completed=info["epoch"], status=_fmt_epoch(info).split("  ", 1)[1])
                self._progress.console.print(f"  {self.label}: {_fmt_epoch(info)}")
            elif not self.quiet:
                elapsed = time.perf_counter() - self._t0
                eta = elapsed / max(info["epoch"], 1) * (info["epochs"] - info["epoch"])
                self._say(f"{self.label}: {_fmt_epoch(info)}  ETA {eta:.0f}s")

    def _say(self, text: str) -> None:
        if not self.quiet:
            console.print(text)
            sys.stderr.flush()
