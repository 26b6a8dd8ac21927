"""Seed statistics for the report: is a difference between two rows signal or noise?

Rows trained with the same seed share the teacher, the data order and the initialisation, so the
comparison is *paired*: the per-seed differences, their mean, and a Student-t interval over seeds.
"""

from __future__ import annotations

import math
import statistics
from typing import Any, Sequence

CONFIDENCE = 0.95


def t_quantile(df: int, confidence: float = CONFIDENCE) -> float:
    """Two-sided Student-t critical value, e.g. 4.303 for df = 2 at 95 %."""
    from scipy.stats import t

    return float(t.ppf(0.5 + confidence / 2, df))


def paired_difference(a: Sequence[float], b: Sequence[float], better: str, worse: str) -> dict[str, Any]:
    """Mean of ``a[i] - b[i]`` over seeds with its 95 % t-interval and a plain verdict.

    The verdict is ``better`` when the whole interval is above 0, ``worse`` when it is below, and
    "no difference shown" otherwise (also with one seed, which gives no interval).
    """
    if len(a) != len(b) or not a:
        raise ValueError(f"paired seeds needed: got {len(a)} and {len(b)} accuracies")
    deltas = [x - y for x, y in zip(a, b)]
    mean = statistics.fmean(deltas)
    out: dict[str, Any] = {"n": len(deltas), "deltas": deltas, "mean": mean, "low": None, "high": None}
    if len(deltas) > 1:
        half = t_quantile(len(deltas) - 1) * statistics.stdev(deltas) / math.sqrt(len(deltas))
        out["low"], out["high"] = mean - half, mean + half
    if out["low"] is not None and out["low"] > 0:
        out["verdict"] = better
    elif out["high"] is not None and out["high"] < 0:
        out["verdict"] = worse
    else:
        out["verdict"] = "no difference shown" + (" (one seed: no interval)" if len(deltas) == 1 else "")
    return out


def spread(values: Sequence[float]) -> dict[str, float]:
    """Mean, standard deviation (0 for one value), minimum and maximum."""
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values), "n": len(values)}
