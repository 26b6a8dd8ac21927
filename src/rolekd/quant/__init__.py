"""DoReFa quantisation of students (weights and activations, 1-8 bits or 32), warm start, and packed export."""

from .convert import QuantReport, load_state_strict, quantize_model, warm_start
from .dorefa import (
    ActQuant,
    QuantConv2d,
    QuantLinear,
    check_bits,
    quantize_activation,
    quantize_k,
    quantize_weight,
)
from .export import PACKED_FORMAT, ExportReport, export_packed, model_size_report, pack_codes, packed_model, unpack_codes
from .load import LoadedNetwork, load_network, load_packed
from .network import build_network, check_meta

__all__ = [
    "PACKED_FORMAT",
    "ActQuant",
    "ExportReport",
    "QuantConv2d",
    "QuantLinear",
    "QuantReport",
    "LoadedNetwork",
    "build_network",
    "check_bits",
    "check_meta",
    "export_packed",
    "load_network",
    "load_packed",
    "load_state_strict",
    "model_size_report",
    "pack_codes",
    "packed_model",
    "quantize_activation",
    "quantize_k",
    "quantize_model",
    "quantize_weight",
    "unpack_codes",
    "warm_start",
]
