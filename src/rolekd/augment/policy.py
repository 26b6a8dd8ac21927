"""PBA policies: 30 (op, probability, magnitude) entries, and their vectorised application.

Entry order (fixed, documented): entry ``i`` is op ``PBA_ORDER[i % 15]`` of half ``i // 15``.
``PBA_ORDER`` is the order of PBA's 60-int encoding (``HP_TRANSFORM_NAMES`` under CPython 2,
pinned by PBA commit 950397f), so the shipped schedules decode as PBA decodes them:

    60-int index ``30*half + 2*j``     = probability (0..10, i.e. p/10) of op ``PBA_ORDER[j]``
    60-int index ``30*half + 2*j + 1`` = magnitude (0..9)

Application follows PBA's ``apply_policy`` per sample: draw a count in {0, 1, 2} with probabilities
{0.2, 0.3, 0.5}; walk the 30 entries once in a per-sample random order; each entry fires with its
probability; stop after ``count`` firings. Here this is done for the whole batch at once (a random
permutation per row, a cumulative sum of firings), then the fired ops are executed grouped by op
family (:func:`rolekd.augment.ops.apply_op_sequence`). Every random number comes from the given
``torch.Generator`` and is drawn in a fixed order and shape, so a seed reproduces a batch bit for bit
on the same device.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch

from .ops import MAX_LEVEL, OP_NAMES, Fill, apply_op_sequence

__all__ = [
    "PBA_ORDER",
    "NUM_ENTRIES",
    "MAX_PROB",
    "COUNT_PROBS",
    "PolicyError",
    "PolicyEntry",
    "Policy",
    "PolicyPlan",
    "sample_plan",
    "apply_plan",
    "apply_policy",
    "load_policy",
    "save_policy",
    "policy_from_json",
]

#: Op order of PBA's 60-int policy encoding (CPython-2 dict order of ``HP_TRANSFORM_NAMES``).
PBA_ORDER: tuple[str, ...] = (
    "Rotate",
    "TranslateX",
    "TranslateY",
    "Brightness",
    "Color",
    "Invert",
    "Sharpness",
    "Posterize",
    "ShearX",
    "Solarize",
    "ShearY",
    "Equalize",
    "AutoContrast",
    "Cutout",
    "Contrast",
)
NUM_ENTRIES = 2 * len(PBA_ORDER)
MAX_PROB = 10
#: PBA's per-image op count distribution: P(0), P(1), P(2).
COUNT_PROBS: tuple[float, float, float] = (0.2, 0.3, 0.5)
MAX_OPS = len(COUNT_PROBS) - 1

POLICY_FORMAT = "rolekd.policy"
POLICY_VERSION = 1

assert sorted(PBA_ORDER) == sorted(OP_NAMES)


class PolicyError(ValueError):
    """A policy that violates PBA's format; the message is one line naming the entry."""


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


@dataclass(frozen=True)
class PolicyEntry:
    """One slot: ``op`` fires with probability ``prob / 10`` at magnitude ``mag``."""

    op: str
    prob: int
    mag: int

    def check(self, index: int) -> None:
        """Raise :class:`PolicyError` naming entry ``index`` if a field is out of range."""
        where = f"policy entry {index} ({self.op})"
        if self.op not in OP_NAMES:
            raise PolicyError(f"policy entry {index}: unknown op {self.op!r} (expected one of {', '.join(PBA_ORDER)})")
        if not _is_int(self.prob) or not 0 <= self.prob <= MAX_PROB:
            raise PolicyError(f"{where}: probability {self.prob!r} is outside 0..{MAX_PROB}")
        if not _is_int(self.mag) or not 0 <= self.mag <= MAX_LEVEL:
            raise PolicyError(f"{where}: magnitude {self.mag!r} is outside 0..{MAX_LEVEL}")

    def to_dict(self) -> dict[str, Any]:
        return {"op": self.op, "prob": self.prob, "mag": self.mag}


@dataclass(frozen=True)
class Policy:
    """30 entries in the fixed order above (each op exactly twice). Immutable and hashable."""

    entries: tuple[PolicyEntry, ...]

    def __post_init__(self) -> None:
        if len(self.entries) != NUM_ENTRIES:
            raise PolicyError(f"policy has {len(self.entries)} entries, expected {NUM_ENTRIES}")
        for i, e in enumerate(self.entries):
            e.check(i)
            expected = PBA_ORDER[i % len(PBA_ORDER)]
            if e.op != expected:
                raise PolicyError(f"policy entry {i} ({e.op}): expected op {expected} at this position")

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def from_triples(cls, triples: Iterable[tuple[str, int, int]]) -> "Policy":
        """Entries in any order; each op must appear exactly twice (first = half 0).

        The order does not change the policy's meaning (application shuffles the entries).
        """
        seen: dict[str, list[PolicyEntry]] = {op: [] for op in PBA_ORDER}
        n = 0
        for i, (op, prob, mag) in enumerate(triples):
            n += 1
            entry = PolicyEntry(op, prob, mag)
            entry.check(i)
            if len(seen[op]) == 2:
                raise PolicyError(
                    f"policy entry {i} ({op}): op appears a third time; each op must appear exactly twice"
                )
            seen[op].append(entry)
        if n != NUM_ENTRIES:
            raise PolicyError(f"policy has {n} entries, expected {NUM_ENTRIES} (each of the 15 ops twice)")
        return cls(tuple(seen[op][half] for half in range(2) for op in PBA_ORDER))

    @classmethod
    def from_dicts(cls, items: Sequence[Any]) -> "Policy":
        """From ``[{"op": name, "prob": 0..10, "mag": 0..9}, ...]`` (30 items, any order)."""
        if not isinstance(items, (list, tuple)):
            raise PolicyError(f"policy must be a list of {NUM_ENTRIES} entries, got {type(items).__name__}")
        triples = []
        for i, item in enumerate(items):
            if not isinstance(item, dict) or set(item) != {"op", "prob", "mag"}:
                raise PolicyError(f"policy entry {i}: expected an object with keys op, prob, mag, got {item!r}")
            triples.append((item["op"], item["prob"], item["mag"]))
        return cls.from_triples(triples)

    @classmethod
    def from_pba_list(cls, values: Sequence[int]) -> "Policy":
        """Decode PBA's 60-int list (``hp_policy``), py2 op order (see module docstring)."""
        if len(values) != 2 * NUM_ENTRIES:
            raise PolicyError(f"PBA policy list has {len(values)} values, expected {2 * NUM_ENTRIES}")
        entries = []
        for i in range(NUM_ENTRIES):
            op = PBA_ORDER[i % len(PBA_ORDER)]
            prob, mag = values[2 * i], values[2 * i + 1]
            prob = int(prob) if isinstance(prob, float) and prob.is_integer() else prob
            mag = int(mag) if isinstance(mag, float) and mag.is_integer() else mag
            entries.append(PolicyEntry(op, prob, mag))
        return cls(tuple(entries))

    @classmethod
    def zeros(cls) -> "Policy":
        """PBA's initial policy: nothing ever fires."""
        return cls(tuple(PolicyEntry(PBA_ORDER[i % 15], 0, 0) for i in range(NUM_ENTRIES)))

    @classmethod
    def random(cls, generator: torch.Generator | None = None) -> "Policy":
        """Uniform probabilities 0..10 and magnitudes 0..9 (PBA's ``--hp_policy random``)."""
        probs = torch.randint(0, MAX_PROB + 1, (NUM_ENTRIES,), generator=generator).tolist()
        mags = torch.randint(0, MAX_LEVEL + 1, (NUM_ENTRIES,), generator=generator).tolist()
        return cls(tuple(PolicyEntry(PBA_ORDER[i % 15], p, m) for i, (p, m) in enumerate(zip(probs, mags))))

    @classmethod
    def single(cls, op: str, prob: int = MAX_PROB, mag: int = 0) -> "Policy":
        """Only ``op`` (its first entry) can fire: for previews and tests."""
        if op not in OP_NAMES:
            raise PolicyError(f"unknown op {op!r} (expected one of {', '.join(PBA_ORDER)})")
        return cls.zeros().with_entry(PBA_ORDER.index(op), prob, mag)

    def with_entry(self, index: int, prob: int, mag: int) -> "Policy":
        entries = list(self.entries)
        entries[index] = replace(entries[index], prob=prob, mag=mag)
        return Policy(tuple(entries))

    # -- views ----------------------------------------------------------------------------------

    def to_pba_list(self) -> list[int]:
        """The 60-int list PBA's ``parse_policy`` reads."""
        return [v for e in self.entries for v in (e.prob, e.mag)]

    def to_dicts(self) -> list[dict[str, Any]]:
        return [e.to_dict() for e in self.entries]

    def to_dict(self) -> dict[str, Any]:
        """A standalone, versioned policy document (what :func:`save_policy` writes)."""
        return {"format": POLICY_FORMAT, "version": POLICY_VERSION, "entries": self.to_dicts()}

    @property
    def prob_sum(self) -> float:
        """Sum of the 30 firing probabilities (PBA's late schedules: about 15)."""
        return sum(e.prob for e in self.entries) / MAX_PROB

    def op_stats(self) -> dict[str, tuple[float, float]]:
        """Per op: (mean probability in 0..1, mean magnitude in 0..9) over its two entries."""
        out: dict[str, tuple[float, float]] = {}
        for j, op in enumerate(PBA_ORDER):
            a, b = self.entries[j], self.entries[j + len(PBA_ORDER)]
            out[op] = ((a.prob + b.prob) / (2 * MAX_PROB), (a.mag + b.mag) / 2)
        return out

    def __str__(self) -> str:
        active = [f"{e.op}(p={e.prob / MAX_PROB:.1f},m={e.mag})" for e in self.entries if e.prob]
        return "Policy[" + (", ".join(active) if active else "no-op") + "]"


# ----------------------------------------------------------------------------------------------
# Vectorised application
# ----------------------------------------------------------------------------------------------

_ENTRY_OP = [OP_NAMES.index(PBA_ORDER[i % len(PBA_ORDER)]) for i in range(NUM_ENTRIES)]


@dataclass(frozen=True)
class PolicyPlan:
    """The random decisions for one batch, so they can be inspected, tested and replayed.

    ``counts`` (N,) is the drawn count in {0, 1, 2}; ``entries`` / ``ops`` / ``levels`` (N, 2)
    are the fired entries (index into ``Policy.entries``), their ops (index into ``OP_NAMES``)
    and magnitudes in application order, ``-1`` where fewer fired; ``signs`` (N, 2) +-1 and
    ``centers`` (N, 2, 2) are the geometric sign and Cutout centre for each slot.
    """

    counts: torch.Tensor
    entries: torch.Tensor
    ops: torch.Tensor
    levels: torch.Tensor
    signs: torch.Tensor
    centers: torch.Tensor

    @property
    def num_applied(self) -> torch.Tensor:
        """Ops actually applied per sample (can be below ``counts``: one pass over the entries)."""
        return (self.ops >= 0).sum(1)

    def to(self, device: torch.device | str) -> "PolicyPlan":
        return PolicyPlan(*(getattr(self, f).to(device) for f in
                            ("counts", "entries", "ops", "levels", "signs", "centers")))


@functools.lru_cache(maxsize=64)
def _policy_tensors(policy: Policy, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Firing probabilities (0..1), magnitudes and op indices of the 30 entries, on ``device``."""
    probs = torch.tensor([e.prob for e in policy.entries], dtype=torch.float32, device=device)
    mags = torch.tensor([e.mag for e in policy.entries], dtype=torch.long, device=device)
    ops = torch.tensor(_ENTRY_OP, dtype=torch.long, device=device)
    return probs / MAX_PROB, mags, ops


def sample_plan(policy: Policy, n: int, height: int, width: int, generator: torch.Generator) -> PolicyPlan:
    """Draw PBA's per-sample decisions for ``n`` images on ``generator``'s device.

    Draw order (fixed, so a seed reproduces a batch): counts (N), shuffle keys (N, 30), firing
    uniforms (N, 30), sign uniforms (N, 2), Cutout centre uniforms (N, 2, 2).
    """
    dev = generator.device
    p, mags, entry_op = _policy_tensors(policy, dev)
    u_count = torch.rand(n, generator=generator, device=dev)
    keys = torch.rand(n, NUM_ENTRIES, generator=generator, device=dev)
    u_fire = torch.rand(n, NUM_ENTRIES, generator=generator, device=dev)
    u_sign = torch.rand(n, MAX_OPS, generator=generator, device=dev)
    u_center = torch.rand(n, MAX_OPS, 2, generator=generator, device=dev)

    counts = torch.zeros(n, dtype=torch.long, device=dev)
    threshold = 0.0
    for p_k in COUNT_PROBS[:-1]:  # count = number of cumulative thresholds (0.2, 0.5) below u
        threshold += p_k
        counts += u_count >= threshold
    order = keys.argsort(dim=1, stable=True)  # per-sample random walk order over the 30 entries
    fired = u_fire < p[order]  # PBA: random.random() < probability
    rank = fired.long().cumsum(1)  # 1 for the first firing entry in walk order, 2 for the second...
    chosen = fired & (rank <= counts.unsqueeze(1))

    slots = []
    for k in range(1, MAX_OPS + 1):
        at_k = chosen & (rank == k)
        pos = at_k.to(torch.uint8).argmax(1, keepdim=True)
        entry = torch.where(at_k.any(1, keepdim=True), order.gather(1, pos), -1)
        slots.append(entry)
    entries = torch.cat(slots, 1)
    valid = entries >= 0
    safe = entries.clamp(min=0)
    ops = torch.where(valid, entry_op[safe], -1)
    levels = torch.where(valid, mags[safe], 0)
    signs = torch.where(u_sign < 0.5, -1, 1)
    rows = (u_center[..., 0] * height).long().clamp(max=max(height - 1, 0))
    cols = (u_center[..., 1] * width).long().clamp(max=max(width - 1, 0))
    centers = torch.stack([rows, cols], -1)
    return PolicyPlan(counts, entries, ops, levels, signs, centers)


def apply_plan(images: torch.Tensor, plan: PolicyPlan, fill: Fill = 0) -> torch.Tensor:
    """Execute a sampled plan (the ops fired for each sample, in order)."""
    return apply_op_sequence(images, plan.ops, plan.levels, plan.signs, plan.centers, fill)


def apply_policy(
    images: torch.Tensor,
    policy: Policy,
    generator: torch.Generator,
    fill: Fill = 0,
    *,
    return_plan: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, PolicyPlan]:
    """Apply ``policy`` to a uint8 batch ``(N, C, H, W)`` as PBA does per image, vectorised.

    ``fill`` is the dataset mean (uint8 per channel). With ``return_plan`` also returns the
    :class:`PolicyPlan` (e.g. the per-sample op counts).
    """
    n, _, h, w = images.shape
    plan = sample_plan(policy, n, h, w, generator)
    out = apply_plan(images, plan, fill)
    return (out, plan) if return_plan else out


# ----------------------------------------------------------------------------------------------
# Standalone policy files
# ----------------------------------------------------------------------------------------------


def policy_from_json(obj: Any) -> Policy:
    """A policy document, a bare list of entry objects, or PBA's 60-int list."""
    if isinstance(obj, dict):
        if obj.get("format") != POLICY_FORMAT:
            raise PolicyError(f"not a policy document: format is {obj.get('format')!r}, expected {POLICY_FORMAT!r}")
        if obj.get("version") != POLICY_VERSION:
            raise PolicyError(f"unsupported policy version {obj.get('version')!r} (this reader knows {POLICY_VERSION})")
        return Policy.from_dicts(obj.get("entries"))
    if isinstance(obj, list) and obj and all(_is_int(v) for v in obj):
        return Policy.from_pba_list(obj)
    return Policy.from_dicts(obj)


def load_policy(path: str | Path) -> Policy:
    """Read a policy file; errors are one line naming the file and the entry."""
    try:
        obj = json.loads(Path(path).read_text())
        return policy_from_json(obj)
    except json.JSONDecodeError as exc:
        raise PolicyError(f"{path}: invalid JSON at line {exc.lineno}: {exc.msg}") from None
    except PolicyError as exc:
        raise PolicyError(f"{path}: {exc}") from None


def save_policy(policy: Policy, path: str | Path) -> Path:
    """Write ``policy.to_dict()`` atomically (temp file + ``os.replace``)."""
    from ..atomic import atomic_write_text

    return atomic_write_text(Path(path), json.dumps(policy.to_dict(), indent=1) + "\n")
