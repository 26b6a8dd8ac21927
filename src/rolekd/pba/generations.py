"""The search's own checkpoint: the population after its last complete generation, what ``--resume`` continues.

``search_state.json`` (written atomically, last) names every live trial's state file under ``states/gen_NNNN/``,
the search generator's state and how many lines of ``history.jsonl`` belong to it. State files of a generation
are written before the JSON that names them, and the previous generation's are deleted only after it, so a
search killed anywhere resumes from one complete generation and never reads a half-written one.
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_bytes, atomic_write_json
from .population import Trial

STATE = "search_state.json"
STATES = "states"
VERSION = 1


class SearchStateError(ValueError):
    """A search folder whose state cannot be continued; one line naming the file and what was expected."""


@dataclass
class SearchState:
    seed: int
    epochs: int
    population: int
    interval: int
    trials: dict[str, Trial]
    rng: random.Random
    generation: int = 0  # complete generations
    dropped: dict[str, str] = field(default_factory=dict)  # trial -> why it left the population
    history_lines: int = 0
    resumes: list[dict[str, int]] = field(default_factory=list)
    clock: dict[str, float] = field(default_factory=dict)  # wall, busy and barrier seconds so far (for the summary)

    @property
    def epoch(self) -> int:
        return min((t.epoch for t in self.trials.values()), default=0)

    def to_json(self) -> dict[str, Any]:
        version, internal, gauss = self.rng.getstate()
        return {
            "version": VERSION, "seed": self.seed, "epochs": self.epochs, "population": self.population,
            "interval": self.interval, "generation": self.generation, "epoch": self.epoch,
            "trials": {name: t.to_json() for name, t in self.trials.items()}, "dropped": self.dropped,
            "rng": [version, list(internal), gauss], "history_lines": self.history_lines,
            "resumes": self.resumes, "clock": self.clock,
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> "SearchState":
        rng = random.Random()
        version, internal, gauss = obj["rng"]
        rng.setstate((version, tuple(internal), gauss))
        return cls(
            seed=int(obj["seed"]), epochs=int(obj["epochs"]), population=int(obj["population"]),
            interval=int(obj["interval"]), trials={n: Trial.from_json(t) for n, t in obj["trials"].items()}, rng=rng,
            generation=int(obj["generation"]), dropped=dict(obj["dropped"]), history_lines=int(obj["history_lines"]),
            resumes=list(obj["resumes"]), clock=dict(obj.get("clock", {})),
        )


def save_state(out: Path, state: SearchState) -> None:
    atomic_write_json(out / STATE, state.to_json())


def load_state(out: Path) -> SearchState | None:
    path = out / STATE
    if not path.is_file():
        return None
    try:
        obj = json.loads(path.read_text())
        if obj.get("version") != VERSION:
            raise ValueError(f"version {obj.get('version')!r}")
        return SearchState.from_json(obj)
    except (ValueError, KeyError, TypeError) as exc:
        raise SearchStateError(f"{path} is not a rolekd search state ({exc}); expected the file a search writes "
                               "after each generation (choose another --out to start afresh)") from None


def write_trial_state(out: Path, generation: int, name: str, data: bytes) -> str:
    """Write one trial's state at the end of ``generation``; returns its path relative to ``out``."""
    rel = f"{STATES}/gen_{generation:04d}/{name}.pt"
    atomic_write_bytes(out / rel, lambda f: f.write(data))
    return rel


def read_trial_state(out: Path, rel: str) -> bytes:
    path = out / rel
    try:
        return path.read_bytes()
    except OSError as exc:
        raise SearchStateError(f"{path}: a trial state named by {out / STATE} cannot be read ({exc.strerror}); "
                               "expected the search folder as the search left it") from None


def prune_states(out: Path, state: SearchState) -> None:
    """Delete every generation folder the state does not name: older generations, and one a kill left half-written."""
    keep = {Path(t.state).parent.name for t in state.trials.values() if t.state}
    folder = out / STATES
    if folder.is_dir():
        for gen in folder.iterdir():
            if gen.name not in keep:
                shutil.rmtree(gen, ignore_errors=True)
