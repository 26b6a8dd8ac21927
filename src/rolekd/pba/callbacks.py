"""Driver-side Tune callbacks: the exploit history file and one compact live progress line.

Both are picklable (Ray stores the run config with the experiment, and ``--resume`` brings them
back): they hold paths and numbers; the rich display is opened in ``setup``.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

from ray.tune import Callback
from rich.console import Console
from rich.live import Live
from rich.text import Text

from ..augment.policy import Policy
from .lineage import ExploitEvent, append_event, read_history

REFRESH_S = 0.5  # live line redraws at most this often
PLAIN_EVERY_S = 30.0  # without a terminal, one progress line this often


class HistoryRecorder(Callback):
    """Appends an :class:`ExploitEvent` to ``history.jsonl`` when a cloned trial first reports.

    The trial reports what only it knows exactly (source, the source checkpoint's epoch, both
    policies, the decision time); ``epoch`` (the target's epoch when exploited) is its previous
    result, which Tune still holds while callbacks run. A resumed search may replay a clone whose
    first result was already recorded: (target, time) pairs already in the file are skipped.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._seen: set[tuple[str, float]] = set()

    @property
    def count(self) -> int:
        return len(self._seen)

    def setup(self, **info: Any) -> None:
        self._seen = {(e.target, e.time) for e in read_history(self.path)}

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        raw = result.get("exploit")
        if not raw:
            return
        clone = json.loads(raw)
        key = (trial.trial_id, float(clone["time"]))
        if key in self._seen:
            return
        event = ExploitEvent(
            time=float(clone["time"]), target=trial.trial_id, source=clone["source"],
            epoch=int((trial.last_result or {}).get("epoch", clone["source_epoch"])),
            source_epoch=int(clone["source_epoch"]),
            old_policy=Policy.from_pba_list(clone["old_policy"]), new_policy=Policy.from_pba_list(clone["new_policy"]),
        )
        append_event(self.path, event)
        self._seen.add(key)


class SearchProgress(Callback):
    """``search teacher │ 3 running 1 done │ epoch 4-5/6 │ best 91.2% median 88.0% │ 3 exploits │ ETA 0:01:10``."""

    def __init__(self, label: str, population: int, epochs: int, recorder: HistoryRecorder) -> None:
        self.label, self.population, self.epochs, self.recorder = label, population, epochs, recorder
        self._live: Live | None = None
        self._console: Console | None = None
        self._latest: dict[str, tuple[int, float]] = {}
        self._steps = 0
        self._t0 = self._last = 0.0

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_live": None, "_console": None}

    @property
    def console(self) -> Console:
        if self._console is None:
            self._console = Console(stderr=True, highlight=False)
        return self._console

    def note(self, text: str) -> None:
        """One line above the live display (or on its own without a terminal)."""
        self.console.print(f"{self.label}: {text}", soft_wrap=True)

    def setup(self, **info: Any) -> None:
        self._t0 = time.perf_counter()
        self._steps = 0
        if self.console.is_terminal:
            self._live = Live(console=self.console, refresh_per_second=4, transient=False)
            self._live.start()

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        self._latest[trial.trial_id] = (int(result["epoch"]), float(result.get("val_acc", float("nan"))))
        self._steps += 1

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.note(f"trial {trial.trial_id} failed and is dropped (traceback in {trial.path}/error.txt)")

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.note(f"trial {trial.trial_id} failed; restarting it from its last checkpoint")

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        now = time.perf_counter()
        if now - self._last >= (REFRESH_S if self._live else PLAIN_EVERY_S):
            self._last = now
            self._show(trials)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self._show(trials)
        if self._live is not None:
            self._live.stop()
            self._live = None

    def line(self, trials: list) -> str:
        status = [t.status for t in trials]
        finished = [self._latest.get(t.trial_id, (0, 0.0))[0] >= self.epochs for t in trials if t.status == "TERMINATED"]
        counts = f"{status.count('RUNNING')} running {sum(finished)} done"
        if not all(finished):  # terminated early: the search was interrupted (Ctrl-C)
            counts += f" {finished.count(False)} stopped"
        if "ERROR" in status:
            counts += f" {status.count('ERROR')} failed"
        parts = [self.label, counts]
        epochs = [e for e, _ in self._latest.values()]
        accs = sorted(a for _, a in self._latest.values() if a == a)
        parts.append(f"epoch {min(epochs)}-{max(epochs)}/{self.epochs}" if epochs else "starting trials")
        if accs:
            parts.append(f"best {100 * accs[-1]:.1f}% median {100 * statistics.median(accs):.1f}%")
        parts += [f"{self.recorder.count} exploits", f"ETA {self._eta(trials)}"]
        return " │ ".join(parts)

    def _eta(self, trials: list) -> str:
        if not self._steps:
            return "?"
        left = sum(self.epochs - self._latest.get(t.trial_id, (0, 0.0))[0] for t in trials if t.status != "ERROR")
        secs = int((time.perf_counter() - self._t0) / self._steps * left)
        return f"{secs // 3600}:{secs // 60 % 60:02d}:{secs % 60:02d}"

    def _show(self, trials: list) -> None:
        text = self.line(trials)
        if self._live is not None:
            self._live.update(Text(text, no_wrap=True, overflow="ellipsis"))
        else:
            self.console.print(text, soft_wrap=True)
