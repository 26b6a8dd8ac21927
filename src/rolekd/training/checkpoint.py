"""Atomic checkpoint files that load with ``weights_only=True``.

A checkpoint is a plain dict of tensors, numbers, strings and lists (``format``/``version``,
``meta`` describing the network, ``model``, optimiser and scheduler state, ``epoch``), so it can
be read without this package and without unpickling arbitrary objects.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor, nn

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
    if path.is_dir():
        raise CheckpointError(f"checkpoint {str(path)!r} is a folder; expected a checkpoint file such as "
                              f"{path / 'last.pt'} or {path / 'best.pt'}")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} not found")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(refused_pickle_message(path, str(exc))) from None
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


def refused_pickle_message(path: Path, torch_message: str) -> str:
    """torch's weights_only refusal, said as what it means for a user (torch's own advice is to drop the safety)."""
    blocked = re.search(r"GLOBAL ([\w.]+)", torch_message)
    if blocked:
        return (f"{path}: contains code or objects rolekd won't load (blocked global {blocked.group(1)}); expected a "
                "checkpoint of tensors and plain data, as rolekd writes")
    _, _, reason = torch_message.partition("WeightsUnpickler error:")
    lines = [line.strip() for line in (reason or torch_message).splitlines() if line.strip()]
    return f"{path}: not a loadable checkpoint ({lines[0][:200] if lines else 'UnpicklingError'})"


def checkpoint_in(path: str | Path) -> tuple[Path, str | None]:
    """A checkpoint file as given, or a training folder's final ``last.pt`` (else ``best.pt``), with a note saying
    which was taken; a folder holding neither is one line naming the trainings inside it."""
    path = Path(path)
    if not path.is_dir():
        return path, None
    for name, what in (("last.pt", "the last epoch"), ("best.pt", "the best epoch; no last.pt")):
        if (path / name).is_file():
            return path / name, f"{path} is a folder: using {path / name} ({what})"
    inside = sorted(p.parent for depth in range(1, 5) for p in path.glob("*/" * depth + "last.pt"))  # a run: 4 deep
    example = f"; it holds {len(inside)} trainings, e.g. {inside[0]}" if inside else ""
    raise CheckpointError(f"{path} is a folder without last.pt or best.pt{example}; "
                          "expected a checkpoint file or the folder of one training")


def describe_network(meta: Mapping[str, Any]) -> str:
    """``resnet8 (width=8), 10 classes, W/A 2/2`` from a checkpoint's meta (bits only when quantised), for errors."""
    if not meta.get("model"):
        return "a network of unknown architecture (no metadata)"
    args = ", ".join(f"{k}={v}" for k, v in (meta.get("model_args") or {}).items())
    w, a = meta.get("w_bits", 32), meta.get("a_bits", 32)
    bits = "" if (w, a) == (32, 32) else f", W/A {w}/{a}"
    return f"{meta['model']}{f' ({args})' if args else ''}, {meta.get('num_classes')} classes{bits}"


def state_mismatch(expected: Mapping[str, Tensor], given: Mapping[str, Any]) -> str | None:
    """The first key or shape difference between two state_dicts, phrased for an error; None if they match."""
    for key, mine in expected.items():
        theirs = given.get(key)
        if theirs is None:
            return f"no {key!r} (expected shape {tuple(mine.shape)}): the architectures differ"
        if not isinstance(theirs, Tensor) or theirs.shape != mine.shape:
            got = tuple(theirs.shape) if isinstance(theirs, Tensor) else type(theirs).__name__
            return f"{key!r} has shape {got}, expected {tuple(mine.shape)}: the architectures differ"
    extra = next((k for k in given if k not in expected), None)
    return None if extra is None else f"unexpected {extra!r}: the architectures differ"


def check_weights(model: nn.Module, checkpoint: Mapping[str, Any], source: str, expected: Mapping[str, Any]) -> None:
    """Refuse another architecture's weights in one line: the file, both networks and the first differing key
    (torch's load_state_dict error lists every key over many lines)."""
    problem = state_mismatch(model.state_dict(), checkpoint.get("model") or {})
    if problem is not None:
        raise CheckpointError(f"{source} holds weights of {describe_network(checkpoint.get('meta') or {})}, "
                              f"expected {describe_network(expected)}: {problem}")


def load_weights(model: nn.Module, checkpoint: Mapping[str, Any], source: str, expected: Mapping[str, Any]) -> None:
    """``model.load_state_dict(checkpoint["model"])`` after :func:`check_weights`."""
    check_weights(model, checkpoint, source, expected)
    model.load_state_dict(checkpoint["model"])
