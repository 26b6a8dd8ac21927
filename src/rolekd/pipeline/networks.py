"""A network's metadata from config: what lets a checkpoint rebuild its network without the config
(:func:`rolekd.quant.build_network` builds it, :func:`rolekd.quant.load_network` loads a file of it)."""

from __future__ import annotations

import inspect
from typing import Any

from ..config import NetworkConfig, StudentConfig
from ..models.registry import model_builder


def network_meta(net: NetworkConfig, num_classes: int, image_shape: tuple[int, int, int], role: str) -> dict[str, Any]:
    """Plain-JSON description of a network: enough for :func:`rolekd.quant.build_network` to rebuild it."""
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

