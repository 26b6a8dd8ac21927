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
from .export import (
    ExportReport,
    export_command,
    export_packed,
    is_packed,
    load_packed,
    load_packed_with_meta,
    model_size_report,
    pack_codes,
    unpack_codes,
)

__all__ = [
    "ActQuant",
    "ExportReport",
    "QuantConv2d",
    "QuantLinear",
    "QuantReport",
    "check_bits",
    "export_command",
    "export_packed",
    "is_packed",
    "load_packed",
    "load_packed_with_meta",
    "load_state_strict",
    "model_size_report",
    "pack_codes",
    "quantize_activation",
    "quantize_k",
    "quantize_model",
    "quantize_weight",
    "unpack_codes",
    "warm_start",
]
