"""DoReFa-Net quantisers (Zhou et al., 2016) with straight-through gradients, placed as in role-kd (reference §B4).

- ``quantize_k(x) = round((2^k - 1) x) / (2^k - 1)``, gradient passed straight through.
- weights, k > 1: ``2 quantize_k(tanh(w) / (2 max|tanh(w)|) + 1/2) - 1`` (per tensor; 2-bit levels {-1, -1/3, 1/3, 1});
  k = 1: ``sign(w) E|w|`` (BWN, with E|w| not differentiated, as tensorpack does).
- activations: ``quantize_k(clip(x, 0, 1))`` at the model's activation sites (an ``ActivationSite`` marker, or
  else a ReLU, which the clip subsumes; placement: :mod:`rolekd.quant.convert`).

Weight quantisation happens in the forward of :class:`QuantConv2d` / :class:`QuantLinear`, so the fp32
latent weight stays the trained parameter and the state_dict keys are those of ``nn.Conv2d`` / ``nn.Linear``.
The integer codes behind a quantised weight (:func:`weight_codes`) and their values (:func:`codes_to_weight`)
go through the same arithmetic as the forward, so an exported model reproduces the logits bit for bit.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

FULL_PRECISION = 32
VALID_BITS = (1, 2, 3, 4, 5, 6, 7, 8, FULL_PRECISION)


def check_bits(bits: int, what: str = "bits") -> int:
    """Return ``bits`` if it is an int in 1-8 or 32 (= full precision); otherwise a one-line ValueError."""
    if isinstance(bits, bool) or not isinstance(bits, int) or bits not in VALID_BITS:
        raise ValueError(f"{what} must be an integer in 1-8 or 32 (full precision), got {bits!r}")
    return bits


def _levels(codes: Tensor, n: int) -> Tensor:
    """Integer codes (as floats) -> values in [0, 1]. Shared by the forward and by unpacking so both agree bitwise."""
    return codes / n


class _RoundSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, n: int) -> Tensor:  # type: ignore[override]
        return _levels(torch.round(x * n), n)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        return grad, None


class _SignSTE(torch.autograd.Function):
    """sign with sign(0) = +1 (so 1-bit weights take exactly two values) and an identity gradient."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        return (x >= 0).to(x.dtype) * 2 - 1

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        return grad


def quantize_k(x: Tensor, k: int) -> Tensor:
    """DoReFa's k-bit quantiser for x in [0, 1] with a straight-through gradient; k = 32 is the identity."""
    if check_bits(k, "k") == FULL_PRECISION:
        return x
    return _RoundSTE.apply(x, 2**k - 1)


def _normalise(w: Tensor) -> Tensor:
    """tanh(w) / (2 max|tanh(w)|) + 1/2, in [0, 1]; an all-zero tensor maps to 1/2 instead of NaN."""
    t = torch.tanh(w)
    return t / (2 * t.abs().max().clamp_min(torch.finfo(t.dtype).tiny)) + 0.5


def binary_scale(w: Tensor) -> Tensor:
    """E|w|, the 1-bit weights' magnitude; held constant in the backward (tensorpack's stop_gradient)."""
    return w.detach().abs().mean()


def _binary_input(w: Tensor, scale: Tensor) -> Tensor:
    return w / scale.clamp_min(torch.finfo(w.dtype).tiny)


def quantize_weight(w: Tensor, k: int) -> Tensor:
    """DoReFa weight quantiser (values in [-1, 1] for k > 1, ±E|w| for k = 1); k = 32 returns ``w``."""
    if check_bits(k, "w_bits") == FULL_PRECISION:
        return w
    if k == 1:
        scale = binary_scale(w)
        # sign(w / E) * E, as tensorpack: the gradient w.r.t. w is the identity, not E
        return _SignSTE.apply(_binary_input(w, scale)) * scale
    return 2 * quantize_k(_normalise(w), k) - 1


class _ClipRoundSTE(torch.autograd.Function):
    """quantize_k(clip(x, 0, 1)) fused: in-place arithmetic and a 1-byte mask saved for the backward, since this
    runs on every activation (~1.7x faster than composing clamp and _RoundSTE on CPU)."""

    @staticmethod
    def forward(ctx, x: Tensor, n: int) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward((x >= 0) & (x <= 1))
        return torch.clamp(x, 0.0, 1.0).mul_(n).round_().div_(n)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        (inside,) = ctx.saved_tensors
        return grad * inside, None


def quantize_activation(x: Tensor, k: int) -> Tensor:
    """quantize_k(clip(x, 0, 1)): at most 2^k levels in [0, 1]; the gradient is x's inside [0, 1], zero outside."""
    if check_bits(k, "a_bits") == FULL_PRECISION:
        raise ValueError("quantize_activation needs a_bits in 1-8; at 32 bits the ReLU stays")
    return _ClipRoundSTE.apply(x, 2**k - 1)


def weight_codes(w: Tensor, k: int) -> tuple[Tensor, Tensor | None]:
    """The uint8 codes (0 .. 2^k - 1) of ``quantize_weight(w, k)``, and the scale E|w| for k = 1 (else None)."""
    w = w.detach()
    if k == 1:
        scale = binary_scale(w)
        return (_binary_input(w, scale) >= 0).to(torch.uint8), scale
    return torch.round(_normalise(w) * (2**k - 1)).to(torch.uint8), None


def codes_to_weight(codes: Tensor, k: int, scale: Tensor | None, dtype: torch.dtype) -> Tensor:
    """Inverse of :func:`weight_codes`: exactly the values ``quantize_weight`` produced."""
    if k == 1:
        if scale is None:
            raise ValueError("1-bit weight codes need their scale E|w|")
        scale = scale.to(dtype)
        return torch.where(codes.bool(), scale, -scale)
    return 2 * _levels(codes.to(dtype), 2**k - 1) - 1


class QuantWeightMixin:
    """Mixin for Conv2d/Linear: quantise ``self.weight`` in the forward (the fp32 latent weight is what trains).

    When no gradient to the weight is needed (eval, a frozen student) the quantised tensor is cached, keyed on the
    weight's storage, version counter (bumped by every in-place update: optimiser steps, load_state_dict) and dtype,
    so it is recomputed exactly when the weight changes. ``prequantized`` marks a weight that already holds the
    deployed values (a model from :func:`rolekd.quant.load_packed`); it is used as is.
    """

    weight: Tensor
    w_bits: int = FULL_PRECISION
    prequantized: bool = False
    _qcache: tuple | None = None

    def quantized_weight(self) -> Tensor:
        w = self.weight
        if self.prequantized:
            return w
        if torch.is_grad_enabled() and w.requires_grad:
            return quantize_weight(w, self.w_bits)
        key = (w.data_ptr(), w._version, w.dtype, w.device, self.w_bits, torch.is_inference_mode_enabled())
        if self._qcache is None or self._qcache[0] != key:
            # the detached alias keeps the source storage alive, so its address cannot be reused by another tensor
            self._qcache = (key, w.detach(), quantize_weight(w.detach(), self.w_bits))
        return self._qcache[2]

    def extra_repr(self) -> str:
        suffix = ", prequantized" if self.prequantized else ""
        return f"{super().extra_repr()}, w_bits={self.w_bits}{suffix}"  # type: ignore[misc]


class QuantConv2d(QuantWeightMixin, nn.Conv2d):
    """nn.Conv2d whose forward uses the DoReFa-quantised weight; same parameters and state_dict keys."""

    @classmethod
    def from_float(cls, conv: nn.Conv2d, w_bits: int) -> "QuantConv2d":
        """Wrap ``conv``'s own Parameters (no copy), so optimisers and references to them stay valid."""
        q = cls(
            conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,  # type: ignore[arg-type]
            conv.dilation, conv.groups, conv.bias is not None, conv.padding_mode, device="meta",
        )
        q.weight, q.bias = conv.weight, conv.bias
        q.w_bits = check_bits(w_bits, "w_bits")
        return q.train(conv.training)

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(x, self.quantized_weight(), self.bias)


class QuantLinear(QuantWeightMixin, nn.Linear):
    """nn.Linear whose forward uses the DoReFa-quantised weight; same parameters and state_dict keys."""

    @classmethod
    def from_float(cls, linear: nn.Linear, w_bits: int) -> "QuantLinear":
        """Wrap ``linear``'s own Parameters (no copy), so optimisers and references to them stay valid."""
        q = cls(linear.in_features, linear.out_features, linear.bias is not None, device="meta")
        q.weight, q.bias = linear.weight, linear.bias
        q.w_bits = check_bits(w_bits, "w_bits")
        return q.train(linear.training)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.quantized_weight(), self.bias)


class ActQuant(nn.Module):
    """DoReFa activation quantiser, the drop-in replacement of an ``ActivationSite`` marker or of an ``nn.ReLU``
    (clip to [0, 1] subsumes the ReLU)."""

    def __init__(self, bits: int) -> None:
        super().__init__()
        if check_bits(bits, "a_bits") == FULL_PRECISION:
            raise ValueError("ActQuant needs a_bits in 1-8; at 32 bits the ReLU stays")
        self.bits = bits

    def forward(self, x: Tensor) -> Tensor:
        return quantize_activation(x, self.bits)

    def extra_repr(self) -> str:
        return f"bits={self.bits}"
