"""The population's history (who cloned whom, when, with which policy) and schedule reconstruction.

``history.jsonl`` holds one JSON object per exploit::

    {"time": 1718000000.123, "target": "a1b2c_00003", "source": "a1b2c_00001", "epoch": 6,
     "source_epoch": 6, "old_policy": [{"op": "Rotate", "prob": 0, "mag": 0}, ...30],
     "new_policy": [...30]}

``time`` is when the scheduler decided the exploit; ``epoch`` the target's completed epochs when
it was exploited; ``source_epoch`` the completed epochs in the source's checkpoint it copied (the
target continues from there); ``old_policy`` is the source's policy and ``new_policy`` the explored
one the target trains with from then on. Unlike PBA's ``parse_log``, :func:`reconstruct` follows a
clone into a source that was never exploited itself (its epochs used the initial policy).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from ..augment.policy import Policy
from ..augment.schedule import Schedule


class LineageError(ValueError):
    """A history that cannot describe a trial's epochs (e.g. a clone from the future)."""


@dataclass(frozen=True)
class ExploitEvent:
    time: float
    target: str
    source: str
    epoch: int
    source_epoch: int
    old_policy: Policy
    new_policy: Policy

    def to_json(self) -> dict[str, Any]:
        return {
            "time": self.time, "target": self.target, "source": self.source, "epoch": self.epoch,
            "source_epoch": self.source_epoch, "old_policy": self.old_policy.to_dicts(),
            "new_policy": self.new_policy.to_dicts(),
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> "ExploitEvent":
        return cls(
            float(obj["time"]), str(obj["target"]), str(obj["source"]), int(obj["epoch"]),
            int(obj["source_epoch"]), Policy.from_dicts(obj["old_policy"]), Policy.from_dicts(obj["new_policy"]),
        )


def append_event(path: str | Path, event: ExploitEvent) -> None:
    """Append one line and flush it: a killed search loses at most the line being written."""
    with open(path, "a") as f:
        f.write(json.dumps(event.to_json(), separators=(",", ":")) + "\n")
        f.flush()


def read_history(path: str | Path) -> list[ExploitEvent]:
    """Events of a history file (absent file: none); a torn last line from a crash is skipped."""
    path = Path(path)
    if not path.is_file():
        return []
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    events = []
    for i, line in enumerate(lines):
        try:
            events.append(ExploitEvent.from_json(json.loads(line)))
        except (KeyError, TypeError, ValueError) as exc:  # PolicyError and JSONDecodeError are ValueErrors
            if i == len(lines) - 1 and isinstance(exc, json.JSONDecodeError):
                break
            raise LineageError(f"{path}: line {i + 1} is not an exploit event ({exc})") from None
    return events


def reconstruct(history: Iterable[ExploitEvent], trial_id: str, epochs: int, initial_policy: Policy) -> Schedule:
    """The per-epoch policies ``trial_id`` trained with over ``epochs`` epochs.

    Walks back from the trial's end: its last exploit says which policy ran from ``source_epoch``
    on; the epochs before that are the source's, as they stood when the exploit was decided.
    """
    events = sorted(history, key=lambda e: e.time)
    segments: list[tuple[int, Policy]] = []
    who, upto, before = trial_id, epochs, math.inf
    while True:
        event = _last_exploit(events, who, before)
        if event is None:
            segments.append((upto, initial_policy))
            break
        if event.source_epoch > upto:
            raise LineageError(
                f"{who} cloned {event.source} at epoch {event.source_epoch}, past the {upto} epochs its lineage needs"
            )
        segments.append((upto - event.source_epoch, event.new_policy))
        who, upto, before = event.source, event.source_epoch, event.time
    return Schedule.from_segments(reversed(segments))


def _last_exploit(events: list[ExploitEvent], target: str, before: float) -> ExploitEvent | None:
    found = None
    for event in events:
        if event.time >= before:
            break
        if event.target == target:
            found = event
    return found
