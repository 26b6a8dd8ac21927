"""Per-epoch PBA policy schedules: build, validate, stretch, save and load.

A :class:`Schedule` is a list of segments ``(n_epochs, Policy)``: what PBA's ``parse_log``
produces from a population-search lineage, and a run-length form of "one policy per epoch".

File format (JSON, versioned; op names spelled out so the meaning never depends on an order)::

    {"format": "rolekd.schedule", "version": 1, "epochs": 200,
     "segments": [{"epochs": 12, "policy": [{"op": "Rotate", "prob": 0, "mag": 0}, ... 30 entries]},
                  ...]}

The segment lengths must add up to ``epochs``. An optional ``"provenance"`` string says where a
schedule came from (the packaged schedules name their repository, commit and file). Instead of ``segments`` a file may give
``"policies": [[30 entries] x epochs]`` (one policy per epoch); it is read into segments.
Inside a policy the 30 entries may come in any order as long as each of the 15 ops appears
exactly twice (``save`` writes the fixed order documented in :mod:`rolekd.augment.policy`).

Packaged schedules (``src/rolekd/schedules/*.json``, see :func:`packaged_schedules`) can be named
wherever a schedule file is accepted: ``Schedule.load("pba-rcifar10")``.
"""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Literal, Sequence

from ..atomic import atomic_write_text
from .policy import Policy, PolicyError

__all__ = [
    "SCHEDULE_FORMAT",
    "SCHEDULE_VERSION",
    "Schedule",
    "ScheduleError",
    "packaged_schedules",
    "resolve_schedule",
]

SCHEDULE_FORMAT = "rolekd.schedule"
SCHEDULE_VERSION = 1
#: Folder of the packaged schedules (``<name>.json``; their source logs in ``sources/``).
PACKAGED_DIR = Path(__file__).resolve().parent.parent / "schedules"


def packaged_schedules() -> dict[str, Path]:
    """The packaged schedules by name (file stem), sorted: e.g. ``{"pba-rcifar10": .../pba-rcifar10.json}``."""
    if not PACKAGED_DIR.is_dir():
        return {}
    return {p.stem: p for p in sorted(PACKAGED_DIR.glob("*.json"))}


def packaged_names_hint() -> str:
    names = ", ".join(packaged_schedules()) or "none installed"
    return f"packaged schedules: {names}"


def resolve_schedule(name_or_path: str | Path) -> Path:
    """The file a schedule argument means: an existing path as it is, else a packaged schedule's file.

    Raises :class:`ScheduleError` (one line, listing the packaged names) when it is neither.
    """
    path = Path(name_or_path)
    if path.exists():
        return path
    packaged = packaged_schedules()
    if str(name_or_path) in packaged:  # a bare name (also when a CLI parsed it into a Path)
        return packaged[str(name_or_path)]
    raise ScheduleError(f"{path}: cannot read: no such file, and not a packaged schedule ({packaged_names_hint()})")


class ScheduleError(ValueError):
    """An invalid schedule or schedule file; the message is one line naming file and entry."""


@dataclass(frozen=True)
class Schedule:
    """Segments of consecutive epochs sharing a policy; ``len(schedule)`` is the epoch count."""

    segments: tuple[tuple[int, Policy], ...]
    #: Where the schedule came from (free text, saved with it); not part of equality.
    provenance: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.provenance is not None and (not isinstance(self.provenance, str) or not self.provenance.strip()):
            raise ScheduleError(f"provenance must be a non-empty string, got {self.provenance!r}")
        if not self.segments:
            raise ScheduleError("schedule has no segments")
        for i, seg in enumerate(self.segments):
            n, pol = seg
            if not isinstance(n, int) or isinstance(n, bool) or n < 1:
                raise ScheduleError(f"segment {i}: epoch count {n!r} must be a positive integer")
            if not isinstance(pol, Policy):
                raise ScheduleError(f"segment {i}: expected a Policy, got {type(pol).__name__}")

    # -- construction ---------------------------------------------------------------------------

    @classmethod
    def from_segments(cls, segments: Iterable[tuple[int, Policy]]) -> "Schedule":
        """From ``[(n_epochs, Policy), ...]`` (e.g. a search lineage); empty segments are dropped."""
        segs = []
        for i, (n, pol) in enumerate(segments):
            if not isinstance(n, int) or isinstance(n, bool) or n < 0:
                raise ScheduleError(f"segment {i}: epoch count {n!r} must be a non-negative integer")
            if n:
                segs.append((n, pol))
        return cls(tuple(segs))

    @classmethod
    def from_policies(cls, policies: Sequence[Policy]) -> "Schedule":
        """One policy per epoch, run-length encoded."""
        segs: list[tuple[int, Policy]] = []
        for pol in policies:
            if segs and segs[-1][1] == pol:
                segs[-1] = (segs[-1][0] + 1, pol)
            else:
                segs.append((1, pol))
        return cls(tuple(segs))

    @classmethod
    def constant(cls, policy: Policy, epochs: int) -> "Schedule":
        return cls(((epochs, policy),))

    @classmethod
    def from_pba_log(cls, lines: Iterable[str | Sequence[Any]], epochs: int) -> "Schedule":
        """PBA's ``parse_log`` on a ``pbt_policy_<trial>.txt`` lineage (Ray's PBT log).

        Each line is ``[target, clone, target_iter, clone_iter, old_config, new_config]`` (JSON
        or Python literal); configs are dicts with ``hp_policy`` or bare 60-int lists. Lines up
        to the last lineage break (``line[i].target != line[i+1].clone``) are dropped; then the
        first ``clone_iter`` epochs use the first line's ``old_config``, each line's
        ``new_config`` runs until the next line's ``clone_iter``, the last one until ``epochs``.
        """
        rows = [_parse_log_line(line, i) for i, line in enumerate(lines) if not _blank(line)]
        if not rows:
            raise ScheduleError("PBA log has no lines")
        cut = None
        for i in range(len(rows) - 1):
            if rows[i][0] != rows[i + 1][1]:
                cut = i
        if cut is not None:
            rows = rows[cut + 1 :]
        segs: list[tuple[int, Policy]] = [(rows[0][3], rows[0][4])]
        for i in range(len(rows) - 1):
            n = rows[i + 1][3] - rows[i][3]
            if n < 0:
                raise ScheduleError(f"PBA log line {rows[i + 1][6]}: clone iteration goes back in time")
            segs.append((n, rows[i][5]))
        last = epochs - rows[-1][3]
        if last < 0:
            raise ScheduleError(
                f"PBA log line {rows[-1][6]}: clone iteration {rows[-1][3]} is past the {epochs} epochs"
            )
        segs.append((last, rows[-1][5]))
        return cls.from_segments(segs)

    def with_provenance(self, provenance: str | None) -> "Schedule":
        """The same schedule, saved with ``provenance`` (``None`` removes it)."""
        return replace(self, provenance=provenance)

    # -- views ----------------------------------------------------------------------------------

    @property
    def epochs(self) -> int:
        return sum(n for n, _ in self.segments)

    def __len__(self) -> int:
        return self.epochs

    @property
    def policies(self) -> list[Policy]:
        """One policy per epoch."""
        return [pol for n, pol in self.segments for _ in range(n)]

    def policy_for_epoch(self, epoch: int) -> Policy:
        if not 0 <= epoch < self.epochs:
            raise IndexError(f"epoch {epoch} is outside this {self.epochs}-epoch schedule")
        for n, pol in self.segments:
            if epoch < n:
                return pol
            epoch -= n
        raise AssertionError("unreachable")

    __getitem__ = policy_for_epoch

    # -- transforms -----------------------------------------------------------------------------

    def stretch(self, n_epochs: int, mode: Literal["pba", "proportional"] = "pba") -> "Schedule":
        """Replay over ``n_epochs`` epochs.

        ``"pba"`` is PBA's ``parse_log_schedule``: each segment lasts ``int(n * n_epochs / epochs)``
        epochs and the remainder is padded with the last policy. When shrinking, segments shorter
        than ``epochs / n_epochs`` vanish. ``"proportional"``: epoch ``e`` uses the policy of
        epoch ``floor(e * epochs / n_epochs)`` (same as ``"pba"`` for integer multipliers).
        """
        if not isinstance(n_epochs, int) or n_epochs < 1:
            raise ScheduleError(f"cannot stretch to {n_epochs!r} epochs")
        old = self.epochs
        if mode == "proportional":
            pols = self.policies
            return Schedule.from_policies([pols[e * old // n_epochs] for e in range(n_epochs)])
        if mode != "pba":
            raise ScheduleError(f"unknown stretch mode {mode!r}")
        segs = [(n * n_epochs // old, pol) for n, pol in self.segments]
        pad = n_epochs - sum(n for n, _ in segs)
        segs.append((pad, self.segments[-1][1]))
        return Schedule.from_segments(_merge(segs))

    # -- serialisation --------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"format": SCHEDULE_FORMAT, "version": SCHEDULE_VERSION, "epochs": self.epochs}
        if self.provenance is not None:
            doc["provenance"] = self.provenance
        doc["segments"] = [{"epochs": n, "policy": pol.to_dicts()} for n, pol in self.segments]
        return doc

    @classmethod
    def from_dict(cls, obj: Any) -> "Schedule":
        """Validate a parsed document; raises :class:`ScheduleError` naming the bad entry."""
        if not isinstance(obj, dict):
            raise ScheduleError(f"expected a JSON object, got {type(obj).__name__}")
        if obj.get("format") != SCHEDULE_FORMAT:
            found = f"its format is {obj['format']!r}" if "format" in obj else "it has no \"format\" key"
            raise ScheduleError(f"not a rolekd schedule ({found}, expected {SCHEDULE_FORMAT!r}); expected the "
                                "schedule.json written by rolekd search or rolekd run")
        if obj.get("version") != SCHEDULE_VERSION:
            raise ScheduleError(f"unsupported version {obj.get('version')!r} (this reader knows {SCHEDULE_VERSION})")
        epochs = obj.get("epochs")
        if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
            raise ScheduleError(f"\"epochs\" must be a positive integer, got {epochs!r}")
        provenance = obj.get("provenance")
        if provenance is not None and (not isinstance(provenance, str) or not provenance.strip()):
            raise ScheduleError(f"\"provenance\" must be a non-empty string, got {provenance!r}")
        if ("segments" in obj) == ("policies" in obj):
            raise ScheduleError("expected exactly one of \"segments\" or \"policies\"")
        if "segments" in obj:
            sched = cls._segments_from_json(obj["segments"])
        else:
            sched = cls._policies_from_json(obj["policies"])
        if sched.epochs != epochs:
            where = "segments cover" if "segments" in obj else "\"policies\" has"
            raise ScheduleError(f"{where} {sched.epochs} epochs but \"epochs\" says {epochs}")
        return sched.with_provenance(provenance) if provenance is not None else sched

    @classmethod
    def _segments_from_json(cls, items: Any) -> "Schedule":
        segs = []
        for i, item in enumerate(_nonempty_list(items, "segments")):
            if not isinstance(item, dict) or set(item) != {"epochs", "policy"}:
                raise ScheduleError(f"segment {i}: expected an object with keys epochs, policy")
            n = item["epochs"]
            if not isinstance(n, int) or isinstance(n, bool) or n < 1:
                raise ScheduleError(f"segment {i}: epoch count {n!r} must be a positive integer")
            segs.append((n, _policy_from_json(item["policy"], f"segment {i}")))
        return cls(tuple(segs))

    @classmethod
    def _policies_from_json(cls, items: Any) -> "Schedule":
        return cls.from_policies([_policy_from_json(item, f"epoch {e}")
                                  for e, item in enumerate(_nonempty_list(items, "policies"))])

    def save(self, path: str | Path) -> Path:
        """Write the JSON document atomically (temp file + ``os.replace``)."""
        doc = self.to_dict()
        segments = doc.pop("segments")
        compact = {"separators": (",", ":")}
        # One segment per line: diffable, without 30 lines per policy.
        body = ",\n ".join(json.dumps(seg, **compact) for seg in segments)
        text = json.dumps(doc, **compact)[:-1] + ',"segments":[\n ' + body + "\n]}\n"
        return atomic_write_text(Path(path), text)

    @classmethod
    def load(cls, name_or_path: str | Path) -> "Schedule":
        """Read and validate a schedule file, or a packaged schedule by name (``"pba-rcifar10"``; an
        existing file of that name wins). Errors are ``ScheduleError('FILE: where: what')``."""
        path = resolve_schedule(name_or_path)
        try:
            obj = json.loads(path.read_text())
        except OSError as exc:
            raise ScheduleError(f"{path}: cannot read: {exc.strerror}") from None
        except json.JSONDecodeError as exc:
            raise ScheduleError(f"{path}: invalid JSON at line {exc.lineno}: {exc.msg}") from None
        try:
            return cls.from_dict(obj)
        except ScheduleError as exc:
            raise ScheduleError(f"{path}: {exc}") from None

    def __str__(self) -> str:
        parts = [f"{n}x {pol}" for n, pol in self.segments]
        return f"Schedule({self.epochs} epochs: " + "; ".join(parts) + ")"


def _merge(segs: list[tuple[int, Policy]]) -> list[tuple[int, Policy]]:
    """Drop empty segments and join neighbours that share a policy."""
    out: list[tuple[int, Policy]] = []
    for n, pol in segs:
        if n <= 0:
            continue
        if out and out[-1][1] == pol:
            out[-1] = (out[-1][0] + n, pol)
        else:
            out.append((n, pol))
    return out


def _blank(line: Any) -> bool:
    return isinstance(line, (str, bytes)) and not line.strip()


def _parse_log_line(line: str | bytes | Sequence[Any], index: int) -> tuple:
    """``(target, clone, target_iter, clone_iter, old_policy, new_policy, line_number)``."""
    where = f"PBA log line {index + 1}"
    row: Any = line
    if isinstance(line, bytes):
        row = line.decode()
    if isinstance(row, str):
        try:
            row = json.loads(row)
        except json.JSONDecodeError:
            try:
                row = ast.literal_eval(row.strip())
            except (ValueError, SyntaxError):
                raise ScheduleError(f"{where}: neither JSON nor a Python literal") from None
    if not isinstance(row, (list, tuple)) or len(row) != 6:
        raise ScheduleError(f"{where}: expected [target, clone, target_iter, clone_iter, old_config, new_config]")
    target, clone, t_iter, c_iter, old, new = row
    if not isinstance(c_iter, int) or c_iter < 0:
        raise ScheduleError(f"{where}: clone iteration {c_iter!r} is not a non-negative integer")
    pols = []
    for name, cfg in (("old_config", old), ("new_config", new)):
        values = cfg.get("hp_policy") if isinstance(cfg, dict) else cfg
        if not isinstance(values, (list, tuple)):
            raise ScheduleError(f"{where}: {name} has no hp_policy list")
        try:
            pols.append(Policy.from_pba_list(list(values)))
        except PolicyError as exc:
            raise ScheduleError(f"{where}: {name}: {exc}") from None
    return (target, clone, t_iter, c_iter, pols[0], pols[1], index + 1)


def _nonempty_list(items: Any, key: str) -> list:
    if not isinstance(items, list) or not items:
        raise ScheduleError(f"\"{key}\" must be a non-empty list")
    return items


def _policy_from_json(item: Any, where: str) -> Policy:
    """A policy of a schedule file; a bad one is a ScheduleError naming where it stands."""
    try:
        return Policy.from_dicts(item)
    except PolicyError as exc:
        raise ScheduleError(f"{where}: {exc}") from None
