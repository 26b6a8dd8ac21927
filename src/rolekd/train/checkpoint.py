"""Atomic checkpoint files that load with ``weights_only=True``.

A checkpoint is a plain dict of tensors, numbers, strings and lists (``format``/``version``,
``meta`` describing the network, ``model``, optimiser and scheduler state, ``epoch``), so it can
be read without this package and without unpickling arbitrary objects.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..atomic import atomic_write_bytes, atomic_write_json, atomic_write_text  # noqa: F401  (re-exported)

FORMAT = "rolekd.checkpoint"
VERSION = 1


class CheckpointError(ValueError):
    pass


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    state = {"format": FORMAT, "version": VERSION, **state}
    atomic_write_bytes(path, lambda f: torch.save(state, f))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a rolekd checkpoint (or a bare state_dict) safely; one-line errors for bad files."""
    return as_checkpoint(read_weights_file(path, map_location), path)


def read_weights_file(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """``torch.load(weights_only=True)`` of a dict file, whatever its format; one-line errors for bad files."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} not found")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path}: not a loadable checkpoint ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a dict checkpoint, found {type(obj).__name__}")
    return obj


def as_checkpoint(obj: dict[str, Any], path: str | Path) -> dict[str, Any]:
    """A file read by :func:`read_weights_file` as a training checkpoint (a bare state_dict is wrapped)."""
    if obj.get("format") != FORMAT:
        if all(isinstance(v, torch.Tensor) for v in obj.values()):
            return {"model": obj, "meta": {}}  # a bare state_dict
        if isinstance(obj.get("format"), str):  # e.g. a packed export: inference only, no optimiser or epoch
            raise CheckpointError(f"{path}: a {obj['format']!r} file, not a training checkpoint ({FORMAT!r}); "
                                  "pass the last.pt/best.pt the training wrote")
        raise CheckpointError(f"{path}: not a rolekd checkpoint (no 'format': {FORMAT!r})")
    return obj
