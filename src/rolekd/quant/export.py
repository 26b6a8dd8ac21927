"""Deployable export of a quantised model: k-bit weight codes packed into uint8, plus the full-precision remainder.

File layout (a plain ``torch.save`` dict, readable with ``torch.load(..., weights_only=True)``)::

    {"format": "rolekd-packed-v1",
     "meta":   {"model": str, "num_classes": int, "model_args": dict, "w_bits": int, "a_bits": int, ...},
     "layers": {module_path: {"bits": int, "shape": [int, ...], "codes": uint8 tensor, "scale": tensor (1-bit)}},
     "state":  {state_dict key: tensor}}   # first/last layer, BatchNorm, biases: everything not packed

``meta`` rebuilds the architecture (:func:`rolekd.quant.network.build_network`: a registry model, quantised as
its bits say), so a model must come from the registry to be exported. Files are read back with
:func:`rolekd.quant.load.load_network` (or :func:`~rolekd.quant.load.load_packed`).
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..atomic import atomic_write_bytes
from ..models import build_model
from ..training.checkpoint import state_mismatch
from .convert import load_state_strict
from .dorefa import FULL_PRECISION, QuantWeightMixin, codes_to_weight, weight_codes
from .network import build_network, check_meta

PACKED_FORMAT = "rolekd-packed-v1"

PathArg = str | os.PathLike


def pack_codes(codes: Tensor, bits: int) -> Tensor:
    """Pack integer codes < 2^bits into a little-endian uint8 bit stream of ceil(n * bits / 8) bytes
    (2-bit: 4 codes per byte)."""
    stream = ((codes.reshape(-1, 1).to(torch.uint8) >> torch.arange(bits, dtype=torch.uint8)) & 1).reshape(-1)
    stream = torch.cat([stream, stream.new_zeros(-stream.numel() % 8)])
    return (stream.view(-1, 8) << torch.arange(8, dtype=torch.uint8)).sum(1, dtype=torch.uint8)


def unpack_codes(packed: Tensor, bits: int, count: int) -> Tensor:
    """Inverse of :func:`pack_codes`: the first ``count`` codes as uint8."""
    if packed.dtype != torch.uint8 or packed.numel() != -(-count * bits // 8):
        raise ValueError(f"packed codes: expected {-(-count * bits // 8)} uint8 bytes for {count} {bits}-bit codes")
    stream = ((packed.reshape(-1, 1) >> torch.arange(8, dtype=torch.uint8)) & 1).reshape(-1)[: count * bits]
    return (stream.view(count, bits) << torch.arange(bits, dtype=torch.uint8)).sum(1, dtype=torch.uint8)


def _packed_layers(model: nn.Module) -> dict[str, QuantWeightMixin]:
    return {n: m for n, m in model.named_modules() if isinstance(m, QuantWeightMixin) and m.w_bits != FULL_PRECISION}


def _packed_nbytes(numel: int, bits: int) -> int:
    return -(-numel * bits // 8) + (4 if bits == 1 else 0)  # 1-bit layers also carry their fp32 scale


def model_size_report(model: nn.Module) -> dict[str, Any]:
    """Bits, parameter counts, and state bytes at full precision vs as deployed (``packed_bytes``: quantised
    weights at their bit-width, as :func:`export_packed` stores them, without file overhead)."""
    w_bits, a_bits = getattr(model, "quant_bits", (FULL_PRECISION, FULL_PRECISION))
    packed = {f"{n}.weight": m.w_bits for n, m in _packed_layers(model).items()}
    fp32_bytes = packed_bytes = quantized_params = 0
    for key, t in model.state_dict().items():
        nbytes = t.numel() * t.element_size()
        fp32_bytes += nbytes
        if key in packed:
            quantized_params += t.numel()
            packed_bytes += _packed_nbytes(t.numel(), packed[key])
        else:
            packed_bytes += nbytes
    return {
        "w_bits": w_bits,
        "a_bits": a_bits,
        "params": sum(p.numel() for p in model.parameters()),
        "quantized_params": quantized_params,
        "fp32_bytes": fp32_bytes,
        "packed_bytes": packed_bytes,
        "ratio": fp32_bytes / max(1, packed_bytes),
    }


@dataclass(frozen=True)
class ExportReport:
    """Sizes on disk: the fp32 state_dict as torch.save writes it vs the packed file."""

    path: str
    w_bits: int
    a_bits: int
    fp32_bytes: int
    packed_bytes: int

    @property
    def ratio(self) -> float:
        return self.fp32_bytes / self.packed_bytes

    def table(self) -> str:
        rows = [("fp32 state_dict", self.fp32_bytes), (f"packed W{self.w_bits}/A{self.a_bits}", self.packed_bytes)]
        lines = [f"{'':<20}{'bytes':>14}{'MiB':>10}"]
        lines += [f"{name:<20}{n:>14,}{n / 2**20:>10.2f}" for name, n in rows]
        lines.append(f"{'ratio':<20}{self.ratio:>13.1f}x   -> {self.path}")
        return "\n".join(lines)


def export_packed(model: nn.Module, path: PathArg, meta: dict[str, Any]) -> ExportReport:
    """Write ``model`` with its quantised weights as packed integer codes (atomically) and report the sizes."""
    meta = check_meta(meta, "export meta")
    bits = tuple(getattr(model, "quant_bits", (FULL_PRECISION, FULL_PRECISION)))
    if bits != (meta["w_bits"], meta["a_bits"]):
        raise ValueError(
            f"export: the model is quantised to W/A = {bits[0]}/{bits[1]} but meta says "
            f"{meta['w_bits']}/{meta['a_bits']}; run quantize_model with the meta's bits first"
        )
    _check_rebuilds(model, meta)
    layers = {name: _pack_layer(name, m) for name, m in _packed_layers(model).items()}
    packed_keys = {f"{name}.weight" for name in layers}
    state = {k: v.detach().cpu() for k, v in model.state_dict().items() if k not in packed_keys}
    payload = {"format": PACKED_FORMAT, "meta": meta, "layers": layers, "state": state}
    atomic_write_bytes(path, lambda f: torch.save(payload, f))
    fp32_bytes = _serialized_size(model.state_dict())
    return ExportReport(str(path), meta["w_bits"], meta["a_bits"], fp32_bytes, os.path.getsize(path))



def packed_model(payload: Any, source: str) -> tuple[nn.Module, dict[str, Any]]:
    """The model (eval mode) and export metadata of an already-read packed file; ``source`` names it in errors."""
    if not isinstance(payload, dict) or payload.get("format") != PACKED_FORMAT:
        raise ValueError(f"{source}: not a packed model (expected a dict with format {PACKED_FORMAT!r})")
    meta = check_meta(payload.get("meta"), source)
    model = build_network(meta)
    modules = dict(model.named_modules())
    state = dict(payload.get("state", {}))
    for name, entry in payload.get("layers", {}).items():
        layer = modules.get(name)
        if not _entry_fits(entry, layer):
            raise ValueError(
                f"{source}: packed layer {name!r} does not match a quantised layer of "
                f"{meta['model']!r} {meta['model_args']}"
            )
        codes = unpack_codes(entry["codes"], layer.w_bits, layer.weight.numel()).view(layer.weight.shape)
        state[f"{name}.weight"] = codes_to_weight(codes, layer.w_bits, entry.get("scale"), layer.weight.dtype)
        layer.prequantized = True
        layer.weight.requires_grad_(False)
    load_state_strict(model, state, source)
    return model.eval(), meta



def _entry_fits(entry: Any, layer: nn.Module | None) -> bool:
    return (
        isinstance(layer, QuantWeightMixin) and isinstance(entry, dict) and isinstance(entry.get("codes"), Tensor)
        and entry.get("bits") == layer.w_bits and entry.get("shape") == list(layer.weight.shape)
    )


def _pack_layer(name: str, layer: QuantWeightMixin) -> dict[str, Any]:
    if layer.prequantized:
        raise ValueError(f"export: layer {name!r} comes from a packed file already; copy that file instead")
    codes, scale = weight_codes(layer.weight, layer.w_bits)
    entry: dict[str, Any] = {
        "bits": layer.w_bits, "shape": list(layer.weight.shape), "codes": pack_codes(codes.cpu(), layer.w_bits)
    }
    if scale is not None:
        entry["scale"] = scale.cpu()
    return entry




def _check_rebuilds(model: nn.Module, meta: dict[str, Any]) -> None:
    """Fail at export time, not at load time, when meta does not describe this model's architecture."""
    with torch.device("meta"):  # keys and shapes only: no memory, no init cost
        reference = build_model(meta["model"], meta["num_classes"], **meta["model_args"])
    problem = state_mismatch(reference.state_dict(), model.state_dict())
    if problem is not None:
        raise ValueError(
            f"export: meta ({meta['model']!r}, {meta['model_args']}) does not rebuild this model: {problem}"
        )




def _serialized_size(obj: Any) -> int:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.tell()
