"""A network from its plain-JSON description (``meta``): a registry model, DoReFa-quantised as the meta's
bits say. Checkpoints and packed exports carry this meta, so a file rebuilds its network without a config."""

from __future__ import annotations

import json
from typing import Any

from torch import nn

from ..models import build_model
from .convert import quantize_model
from .dorefa import FULL_PRECISION, check_bits

_META_TYPES: dict[str, type] = {"model": str, "num_classes": int, "model_args": dict, "w_bits": int, "a_bits": int}
META_HELP = "a meta dict with model (str), num_classes (int), model_args (dict), w_bits and a_bits (int)"


def build_network(meta: dict[str, Any]) -> nn.Module:
    """The network ``meta`` describes; at W/A = 32/32 it is left unconverted (an optional ``keep_first_last``,
    default True, is honoured)."""
    model = build_model(meta["model"], meta["num_classes"], **meta.get("model_args", {}))
    w_bits, a_bits = meta.get("w_bits", FULL_PRECISION), meta.get("a_bits", FULL_PRECISION)
    if (w_bits, a_bits) != (FULL_PRECISION, FULL_PRECISION):
        quantize_model(model, w_bits, a_bits, keep_first_last=meta.get("keep_first_last", True))
    return model


def check_meta(meta: Any, source: str) -> dict[str, Any]:
    """Validate rebuild metadata (required keys and types, valid bits, JSON-serialisable); one-line errors."""
    if not isinstance(meta, dict):
        raise ValueError(f"{source}: expected {META_HELP}, got {type(meta).__name__}")
    for key, kind in _META_TYPES.items():
        if key not in meta:
            raise ValueError(f"{source}: missing {key!r}; expected {META_HELP}")
        if not isinstance(meta[key], kind) or isinstance(meta[key], bool):
            raise ValueError(f"{source}: {key!r} must be {kind.__name__}, got {meta[key]!r}")
    check_bits(meta["w_bits"], f"{source}: w_bits")
    check_bits(meta["a_bits"], f"{source}: a_bits")
    try:
        json.dumps(meta)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{source}: meta must be JSON-serialisable ({exc})") from exc
    return dict(meta)
