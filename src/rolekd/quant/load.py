"""Checkpoint → network, the one way: every file rolekd reads weights from (a training checkpoint, a bare
state_dict, a packed export) becomes its network through :func:`load_network`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from ..training import as_checkpoint, load_weights, read_weights_file
from .export import PACKED_FORMAT, packed_model
from .network import build_network, check_meta


@dataclass
class LoadedNetwork:
    """A network rebuilt from a file, with the meta it was built from and the whole file (optimiser, agents' state)."""

    model: nn.Module
    meta: dict[str, Any]
    payload: dict[str, Any]
    packed: bool = False


def load_network(
    source: str | Path | Mapping[str, Any],
    *,
    meta: Mapping[str, Any] | None = None,
    device: str | torch.device = "cpu",
    label: str | None = None,
) -> LoadedNetwork:
    """The network a file (or an already-read payload) holds, on ``device``.

    The file's own meta describes the network; ``meta`` stands in for a file without one (a bare
    state_dict, described by the config). Weights of another architecture are a one-line error naming
    ``label`` (default: the path), both networks and the first differing key. Files are read with
    ``weights_only=True``.
    """
    name = label or (str(source) if not isinstance(source, Mapping) else "weights")
    payload = dict(source) if isinstance(source, Mapping) else read_weights_file(source)
    if payload.get("format") == PACKED_FORMAT:
        model, packed_meta = packed_model(payload, name)
        return LoadedNetwork(model.to(device), packed_meta, payload, packed=True)
    state = payload if isinstance(payload.get("model"), dict) and "format" not in payload else as_checkpoint(payload, name)
    found = state.get("meta") or (dict(meta) if meta else None)
    if not found:
        raise ValueError(f"{name}: no network metadata ('meta'); expected a checkpoint written by rolekd or a packed "
                         "export")
    found = check_meta(found, f"{name} 'meta'")
    model = build_network(found)
    load_weights(model, state, name, found)
    return LoadedNetwork(model.to(device), found, state)


def load_packed(path: str | Path) -> nn.Module:
    """Rebuild an exported model for inference (eval mode): its quantised layers hold the deployed weight values.

    The logits are bit-identical to the exported model's on CPU. To fine-tune instead, build and quantise a fresh
    model and :func:`~rolekd.quant.warm_start` it from a training checkpoint.
    """
    return packed_model(read_weights_file(path), str(path))[0]
