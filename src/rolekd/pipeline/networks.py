"""Networks from config: registry model, optional DoReFa quantisation, and the metadata that lets a
checkpoint rebuild its network without the config."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from torch import nn

from ..config import NetworkConfig, StudentConfig
from ..models import build_model
from ..models.registry import model_builder


def network_meta(net: NetworkConfig, num_classes: int, image_shape: tuple[int, int, int], role: str) -> dict[str, Any]:
    """Plain-JSON description of a network: enough for :func:`build_network` to rebuild it."""
    w_bits = a_bits = 32
    if isinstance(net, StudentConfig):
        w_bits, a_bits = net.w_bits, net.a_bits
    args = dict(net.model_args)
    params = inspect.signature(model_builder(net.model, f"{role}.model")).parameters
    if "in_channels" in params:
        args.setdefault("in_channels", image_shape[0])
    if "image_size" in params:
        args.setdefault("image_size", image_shape[-1])
    return {"model": net.model, "num_classes": num_classes, "model_args": args,
            "w_bits": w_bits, "a_bits": a_bits, "role": role}


def build_network(meta: dict[str, Any]) -> nn.Module:
    model = build_model(meta["model"], meta["num_classes"], **meta.get("model_args", {}))
    if meta.get("w_bits", 32) < 32 or meta.get("a_bits", 32) < 32:
        from ..quant import quantize_model

        quantize_model(model, meta["w_bits"], meta["a_bits"])
    return model


def load_trained_network(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """A training checkpoint or a packed export (``rolekd export``), rebuilt on the CPU with its metadata."""
    from ..quant import PACKED_FORMAT, packed_model
    from ..train import as_checkpoint, load_weights, read_weights_file

    payload = read_weights_file(path)  # read once, whichever of the two it is
    if payload.get("format") == PACKED_FORMAT:
        return packed_model(payload, str(path))
    state = as_checkpoint(payload, path)
    meta = state.get("meta") or {}
    if "model" not in meta:
        raise ValueError(f"{path}: no network metadata; expected a checkpoint written by rolekd or a packed export")
    model = build_network(meta)
    load_weights(model, state, str(path), meta)
    return model, meta
