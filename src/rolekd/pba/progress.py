"""The search's live progress line: ``search teacher │ generation 2/5 │ 3 training 1 at the barrier │ epoch 4/10 │
best 91.2% median 88.0% │ 3 exploits │ ETA 0:01:10`` — redrawn in place on a terminal, one line every 30 s without."""

from __future__ import annotations

import statistics
import time

from rich.console import Console
from rich.live import Live
from rich.text import Text

REFRESH_S = 0.5  # live line redraws at most this often
PLAIN_EVERY_S = 30.0  # without a terminal, one progress line this often


def clock_text(seconds: float) -> str:
    secs = int(seconds)
    return f"{secs // 3600}:{secs // 60 % 60:02d}:{secs % 60:02d}"


class SearchProgress:
    def __init__(self, label: str, epochs: int, generations: int) -> None:
        self.label, self.epochs, self.generations = label, epochs, generations
        self.console = Console(stderr=True, highlight=False)
        self._live: Live | None = None
        self._last = 0.0

    def note(self, text: str) -> None:
        """One line above the live display (or on its own without a terminal)."""
        self.console.print(f"{self.label}: {text}", soft_wrap=True)

    def start(self) -> None:
        if self.console.is_terminal:
            self._live = Live(console=self.console, refresh_per_second=4, transient=False)
            self._live.start()

    def stop(self, final: str | None = None) -> None:
        if final is not None:
            self._show(final)
        if self._live is not None:
            self._live.stop()
            self._live = None

    def update(self, generation: int, training: int, waiting: int, epoch: int, accs: list[float], exploits: int,
               eta_s: float | None, force: bool = False) -> None:
        now = time.perf_counter()
        if force or now - self._last >= (REFRESH_S if self._live else PLAIN_EVERY_S):
            self._last = now
            self._show(self.line(generation, training, waiting, epoch, accs, exploits, eta_s))

    def line(self, generation: int, training: int, waiting: int, epoch: int, accs: list[float], exploits: int,
             eta_s: float | None) -> str:
        parts = [self.label, f"generation {min(generation + 1, self.generations)}/{self.generations}",
                 f"{training} training {waiting} at the barrier", f"epoch {epoch}/{self.epochs}"]
        accs = sorted(a for a in accs if a == a)
        if accs:
            parts.append(f"best {100 * accs[-1]:.1f}% median {100 * statistics.median(accs):.1f}%")
        parts += [f"{exploits} exploits", f"ETA {clock_text(eta_s) if eta_s is not None else '?'}"]
        return " │ ".join(parts)

    def _show(self, text: str) -> None:
        if self._live is not None:
            self._live.update(Text(text, no_wrap=True, overflow="ellipsis"))
        else:
            self.console.print(text, soft_wrap=True)
