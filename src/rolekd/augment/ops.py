"""PBA's 15 augmentation operations, batched over uint8 ``(N, C, H, W)`` tensors.

Every op reproduces the Pillow call PBA makes for one image (``pba/augmentation_transforms.py``),
but for a whole batch with per-sample magnitudes, on any device:

* colour ops are per-sample, per-channel 256-entry lookup tables (Invert, Posterize, Solarize,
  Brightness, Contrast, AutoContrast, Equalize) or per-pixel blends (Color, Sharpness), computed with
  Pillow's own integer / float32 arithmetic, so results are bit-identical to Pillow on RGB images;
* geometric ops (Rotate, ShearX/Y, TranslateX/Y) and in-policy Cutout are *index maps*: for every
  output pixel the source pixel index (or a sentinel meaning "fill"). The maps use Pillow's 16.16
  fixed-point nearest-neighbour arithmetic, so they match ``Image.transform(..., NEAREST)`` exactly,
  and two maps compose exactly (``compose_index``) into one gather.

Magnitudes are PBA levels 0..10 (the search uses 0..9). ``fill`` is the uint8 dataset mean: PBA
leaves transparent pixels that ``pil_unwrap`` sets to the mean, here they are written directly.
Deviation from PBA, on purpose: a later colour op transforms fill pixels like any other pixel (PBA's
RGBA round trips make that depend on the op); sizes other than 32x32 scale Translate and Cutout
by ``size / 32`` (PBA hard-codes 32).

``apply_op_sequence`` runs up to K ops per sample (PBA: K = 2), vectorised: per step the batch is
sorted by op so that each op family is one contiguous slice, transformed together: one gather for
all geometric ops and Cutout (per-sample index maps), one table lookup for all LUT ops, one blend
each for Color and Sharpness. A sample's two consecutive warps, or two image-independent tables,
are composed exactly into one. There is no Python loop over images.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Literal, Sequence

import torch

__all__ = [
    "OP_NAMES",
    "OPS",
    "OpSpec",
    "GEOMETRIC_OPS",
    "PARAMETER_MAX",
    "MAX_LEVEL",
    "Fill",
    "auto_contrast",
    "equalize",
    "invert",
    "rotate",
    "posterize",
    "solarize",
    "color",
    "contrast",
    "brightness",
    "sharpness",
    "shear_x",
    "shear_y",
    "translate_x",
    "translate_y",
    "cutout",
    "apply_op",
    "apply_op_sequence",
    "affine_index",
    "compose_index",
    "remap",
    "apply_lut",
    "rotate_degrees",
    "shear_coefficient",
    "translate_pixels",
    "posterize_bits",
    "solarize_threshold",
    "enhance_factor",
    "cutout_size",
]

#: The 15 operations in the order PBA's source declares them (``HP_TRANSFORMS``). This order is
#: only a naming convention; the 60-int policy encoding uses the py2 order in ``policy.py``.
OP_NAMES: tuple[str, ...] = (
    "AutoContrast",
    "Equalize",
    "Invert",
    "Rotate",
    "Posterize",
    "Solarize",
    "Color",
    "Contrast",
    "Brightness",
    "Sharpness",
    "ShearX",
    "ShearY",
    "TranslateX",
    "TranslateY",
    "Cutout",
)
GEOMETRIC_OPS: frozenset[str] = frozenset({"Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY"})
#: PBA's ``PARAMETER_MAX``: magnitudes are scaled by ``level / 10``.
PARAMETER_MAX = 10
#: Largest magnitude the search produces (explore clamps at 9).
MAX_LEVEL = 9

Fill = int | Sequence[int] | torch.Tensor
Levels = int | torch.Tensor


# --------------------------------------------------------------------------------------------
# Magnitude mapping: PBA's int_parameter / float_parameter, evaluated with Python arithmetic so
# the values are exactly those PBA computes.
# --------------------------------------------------------------------------------------------


def _int_parameter(level: int, maxval: float) -> int:
    return int(level * maxval / PARAMETER_MAX)


def _float_parameter(level: int, maxval: float) -> float:
    return float(level) * maxval / PARAMETER_MAX


def rotate_degrees(level: int) -> int:
    """Rotate: ``int(3 * level)`` degrees (before the random sign)."""
    return _int_parameter(level, 30)


def shear_coefficient(level: int) -> float:
    """ShearX/Y: affine coefficient ``0.03 * level``."""
    return _float_parameter(level, 0.3)


def translate_pixels(level: int, size: int = 32) -> float:
    """TranslateX/Y: ``level`` pixels at size 32, scaled by ``size / 32`` otherwise."""
    return _int_parameter(level, 10) * size / 32


def posterize_bits(level: int) -> int:
    """Posterize: bits kept = ``4 - int(0.4 * level)``."""
    return 4 - _int_parameter(level, 4)


def solarize_threshold(level: int) -> int:
    """Solarize: values ``>= 256 - int(25.6 * level)`` are inverted (level 0 is a no-op)."""
    return 256 - _int_parameter(level, 256)


def enhance_factor(level: int) -> float:
    """Color/Contrast/Brightness/Sharpness: Pillow enhance factor ``0.1 + 0.18 * level``."""
    return _float_parameter(level, 1.8) + 0.1


def cutout_size(level: int, size: int = 32) -> int:
    """In-policy Cutout: square side ``int(2 * level)`` at size 32, scaled by ``size / 32``."""
    return int(_int_parameter(level, 20) * size / 32)


# --------------------------------------------------------------------------------------------
# Argument normalisation
# --------------------------------------------------------------------------------------------


def _check_images(images: torch.Tensor) -> None:
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise ValueError(
            f"expected uint8 images of shape (N, C, H, W), got {images.dtype} {tuple(images.shape)}"
        )
    if images.shape[1] not in (1, 3):
        raise ValueError(f"expected 1 or 3 channels, got {images.shape[1]}")


def _levels(levels: Levels, n: int, device: torch.device) -> torch.Tensor:
    t = torch.as_tensor(levels, device=device).long()
    if t.dim() == 0:
        t = t.expand(n)
    if t.shape != (n,):
        raise ValueError(f"levels must be a scalar or shape ({n},), got {tuple(t.shape)}")
    if t.numel() and (int(t.min()) < 0 or int(t.max()) > PARAMETER_MAX):
        raise ValueError(f"levels must be in 0..{PARAMETER_MAX}")
    return t


def _signs(signs: torch.Tensor | int | None, n: int, device: torch.device) -> torch.Tensor:
    if signs is None:
        return torch.ones(n, dtype=torch.long, device=device)
    t = torch.as_tensor(signs, device=device).long()
    if t.dim() == 0:
        t = t.expand(n)
    if t.shape != (n,):
        raise ValueError(f"signs must be a scalar or shape ({n},), got {tuple(t.shape)}")
    return torch.where(t < 0, -1, 1)


def _fill(fill: Fill, channels: int, device: torch.device) -> torch.Tensor:
    t = torch.as_tensor(fill, device=device)
    if t.dim() == 0:
        t = t.expand(channels)
    if t.shape != (channels,):
        raise ValueError(f"fill must be a scalar or have {channels} values, got {tuple(t.shape)}")
    if t.is_floating_point():
        t = t.round()
    return t.clamp(0, 255).to(torch.uint8)


# --------------------------------------------------------------------------------------------
# Geometric primitives: index maps in Pillow's fixed-point nearest-neighbour arithmetic
# --------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=256)
def _constant(values: tuple, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A small constant table on ``device``, made once (no host-to-device copy per call)."""
    return torch.tensor(values, dtype=dtype, device=device)


def _pil_fix(v: float) -> int:
    return math.floor(v * 65536.0 + 0.5)


def _pil_rotate_matrix(degrees: float, width: int, height: int) -> tuple[float, ...]:
    """The inverse matrix ``Image.rotate`` passes to ``Image.transform`` (same float operations)."""
    angle = degrees % 360.0
    if angle == 0:
        return (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
    cx, cy = width / 2, height / 2
    angle = -math.radians(angle)
    a, b = round(math.cos(angle), 15), round(math.sin(angle), 15)
    d, e = round(-math.sin(angle), 15), round(math.cos(angle), 15)
    c = a * -cx + b * -cy + 0.0
    f = d * -cx + e * -cy + 0.0
    return (a, b, c + cx, d, e, f + cy)


def _pil_matrix(op: str, level: int, sign: int, width: int, height: int) -> tuple[float, ...]:
    if op == "Rotate":
        return _pil_rotate_matrix(sign * rotate_degrees(level), width, height)
    if op == "ShearX":
        return (1.0, sign * shear_coefficient(level), 0.0, 0.0, 1.0, 0.0)
    if op == "ShearY":
        return (1.0, 0.0, 0.0, sign * shear_coefficient(level), 1.0, 0.0)
    if op == "TranslateX":
        return (1.0, 0.0, sign * translate_pixels(level, width), 0.0, 1.0, 0.0)
    if op == "TranslateY":
        return (1.0, 0.0, 0.0, 0.0, 1.0, sign * translate_pixels(level, height))
    return (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)  # identity (Cutout's base map)


def _fixed_coefficients(m: Sequence[float]) -> tuple[int, ...]:
    """Pillow's ``affine_fixed`` coefficients (output pixel -> 16.16 source position).

    Translations take Pillow's ``ImagingScaleAffine`` float path instead; for PBA's offsets
    (multiples of 1/32 px) the two paths give identical indices.
    """
    a0, a1, a2, a3, a4, a5 = m
    return (
        _pil_fix(a0),
        _pil_fix(a1),
        _pil_fix(a2 + a0 * 0.5 + a1 * 0.5),
        _pil_fix(a3),
        _pil_fix(a4),
        _pil_fix(a5 + a3 * 0.5 + a4 * 0.5),
    )


#: Ops whose per-sample transform is an index map, in the row order of ``_warp_rows``.
_WARP_OPS: tuple[str, ...] = ("Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY", "Cutout")
_ROWS_PER_OP = (PARAMETER_MAX + 1) * 2  # (level, sign) pairs


@functools.lru_cache(maxsize=32)
def _warp_rows(height: int, width: int) -> tuple[tuple[int, ...], ...]:
    """Fixed-point coefficients for every (warp op, level, sign): row = op*22 + level*2 + neg."""
    return tuple(
        _fixed_coefficients(_pil_matrix(op, level, sign, width, height))
        for op in _WARP_OPS
        for level in range(PARAMETER_MAX + 1)
        for sign in (1, -1)
    )


def affine_index(coefficients: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Index maps for 16.16 fixed-point affine coefficients ``(R, 6)`` (Pillow's ``affine_fixed``).

    Returns ``(R, H*W)`` int64: the flat source index of each output pixel, or ``H*W`` (the
    sentinel for "fill") where the source falls outside the image.
    """
    dev = coefficients.device
    c = coefficients.long().unsqueeze(-1)  # (R, 6, 1)
    ys = torch.arange(height, device=dev).repeat_interleave(width).unsqueeze(0)
    xs = torch.arange(width, device=dev).repeat(height).unsqueeze(0)
    xin = (c[:, 2] + xs * c[:, 0] + ys * c[:, 1]) >> 16
    yin = (c[:, 5] + xs * c[:, 3] + ys * c[:, 4]) >> 16
    inside = (xin >= 0) & (xin < width) & (yin >= 0) & (yin < height)
    return torch.where(inside, yin * width + xin, height * width)


def compose_index(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """The single map equal to warping with ``first`` and then with ``second`` (exact).

    Both are ``(N, H*W)`` maps with sentinel ``H*W``; a fill pixel stays fill.
    """
    sentinel = torch.full_like(first[:, :1], first.shape[1])
    return torch.cat([first, sentinel], 1).gather(1, second)


def remap(images: torch.Tensor, index: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
    """Gather pixels by index map ``(N, H*W)``; the sentinel ``H*W`` reads ``fill``.

    ``fill`` is ``(C,)`` or per-sample ``(N, C)`` uint8.
    """
    n, c, h, w = images.shape
    fill = fill.view(-1, c, 1).expand(n, c, 1)
    ext = torch.cat([images.reshape(n, c, h * w), fill], 2)
    return ext.gather(2, index.unsqueeze(1).expand(n, c, h * w)).view(n, c, h, w)


def _cutout_boxes(
    index: torch.Tensor, centers: torch.Tensor, levels: torch.Tensor, height: int, width: int
) -> torch.Tensor:
    """Set the sentinel inside PBA's cutout squares: rows/cols ``[c - s//2, c + s//2)``, clipped."""
    dev = index.device
    sides = _constant(tuple(cutout_size(lv, min(height, width)) for lv in range(PARAMETER_MAX + 1)), torch.long, dev)
    half = (sides[levels] // 2).view(-1, 1)
    cy, cx = centers[:, 0:1].long(), centers[:, 1:2].long()
    ys, xs = torch.arange(height, device=dev).view(1, -1), torch.arange(width, device=dev).view(1, -1)
    rows = (ys >= cy - half) & (ys < cy + half)
    cols = (xs >= cx - half) & (xs < cx + half)
    inside = (rows.unsqueeze(2) & cols.unsqueeze(1)).view(index.shape)
    return index.masked_fill(inside, height * width)


#: Images up to this many pixels keep the maps of every (warp op, level, sign) cached per device
#: (132 maps; 1 MiB at 32x32); larger ones build the maps of the codes in use on each call.
_MAP_CACHE_PIXELS = 64 * 64


@functools.lru_cache(maxsize=8)
def _all_warp_maps(height: int, width: int, device: torch.device) -> torch.Tensor:
    return affine_index(_constant(_warp_rows(height, width), torch.long, device), height, width)


def _warp_maps(
    slots: torch.Tensor, levels: torch.Tensor, signs: torch.Tensor, height: int, width: int
) -> torch.Tensor:
    """Per-sample index maps for ``_WARP_OPS`` slots, selected from maps built once per
    (op, level, sign): a policy has at most four distinct transforms per op."""
    codes = slots * _ROWS_PER_OP + levels * 2 + (signs < 0).long()
    if height * width <= _MAP_CACHE_PIXELS:
        return _all_warp_maps(height, width, slots.device).index_select(0, codes)
    uniq, inverse = torch.unique(codes, return_inverse=True)
    table = _constant(_warp_rows(height, width), torch.long, slots.device)
    return affine_index(table[uniq], height, width).index_select(0, inverse)


# --------------------------------------------------------------------------------------------
# Colour primitives: per-sample per-channel lookup tables and Pillow blends
# --------------------------------------------------------------------------------------------


def apply_lut(images: torch.Tensor, lut: torch.Tensor) -> torch.Tensor:
    """Map every pixel through its sample's and channel's table; ``lut`` is ``(N, C, 256)`` uint8."""
    n, c, h, w = images.shape
    # index_select on the flat table with int32 indices: ~1.6x faster on CPU than gather's int64.
    offsets = torch.arange(0, n * c * 256, 256, dtype=torch.int32, device=images.device).view(n, c, 1)
    index = torch.add(images.reshape(n, c, h * w), offsets)  # uint8 + int32 -> int32, one pass
    return lut.reshape(-1).index_select(0, index.view(-1)).view(n, c, h, w)


def _to_uint8(values: torch.Tensor) -> torch.Tensor:
    """Values already in [0, 255] -> uint8, truncating floats (via int16: a direct float or
    int64 -> uint8 conversion is several times slower on CPU)."""
    return values.to(torch.int16).to(torch.uint8)


def _blend(degenerate: torch.Tensor, image: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """Pillow's ``Image.blend`` in float32: ``trunc(d + alpha * (x - d))`` clipped to 0..255.

    Multiply and add stay separate ops (no fused multiply-add) to round like Pillow's C code.
    """
    d = degenerate.float()
    out = (image.float() - d).mul_(alpha)
    return _to_uint8(out.add_(d).clamp_(0, 255))


@functools.lru_cache(maxsize=8)
def _factor_table(device: torch.device) -> torch.Tensor:
    """Enhance factors per level as float32 (Pillow gets a double and blends with ``(float)alpha``)."""
    table = torch.tensor([enhance_factor(lv) for lv in range(PARAMETER_MAX + 1)], dtype=torch.float64)
    return table.float().to(device)


def _luminance(images: torch.Tensor) -> torch.Tensor:
    """Pillow's RGB -> L conversion (ITU-R 601-2 with integer rounding), int32 ``(N, 1, H, W)``."""
    x = images.int()
    if images.shape[1] == 1:
        return x
    return (x[:, 0:1] * 19595 + x[:, 1:2] * 38470 + x[:, 2:3] * 7471 + 0x8000) >> 16


_STATIC_LUT_OPS: tuple[str, ...] = ("Invert", "Posterize", "Solarize", "Brightness")


@functools.lru_cache(maxsize=8)
def _static_lut_table(device: torch.device) -> torch.Tensor:
    """Image-independent tables ``(4 * 11, 256)``, row = slot * 11 + level (``_STATIC_LUT_OPS``)."""
    v = torch.arange(256, dtype=torch.long)
    rows = []
    for op in _STATIC_LUT_OPS:
        for lv in range(PARAMETER_MAX + 1):
            if op == "Invert":
                rows.append(255 - v)
            elif op == "Posterize":
                bits = max(posterize_bits(lv), 0)
                rows.append(v & (~(2 ** (8 - bits) - 1) & 0xFF))
            elif op == "Solarize":
                rows.append(torch.where(v < solarize_threshold(lv), v, 255 - v))
            else:  # Brightness: blend with black
                alpha = torch.tensor(enhance_factor(lv), dtype=torch.float32)
                rows.append(_blend(torch.zeros(256), v, alpha).long())
    return torch.stack(rows).to(torch.uint8).to(device)


def _autocontrast_luts(images: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """``ImageOps.autocontrast`` (cutoff 0): per channel, stretch [min, max] to [0, 255]."""
    flat = images.reshape(*images.shape[:2], -1)
    lo = flat.amin(2, keepdim=True).double()
    hi = flat.amax(2, keepdim=True).double()
    ix = torch.arange(256, dtype=torch.float64, device=images.device)
    # Tensor / tensor: ``scalar / tensor`` would multiply by a reciprocal and round differently.
    scale = torch.full_like(hi, 255.0) / (hi - lo).clamp(min=1)
    offset = -lo * scale
    lut = (ix * scale).add_(offset).clamp_(0, 255)  # int(): truncation, done by the conversion
    return _to_uint8(torch.where(hi > lo, lut, ix))


def _histograms(images: torch.Tensor) -> torch.Tensor:
    """Per-sample per-channel 256-bin histograms, int32 ``(N, C, 256)``."""
    n, c = images.shape[:2]
    flat = images.reshape(n * c, -1).long()
    hist = torch.zeros(n * c, 256, dtype=torch.int32, device=images.device)
    ones = torch.ones(1, 1, dtype=torch.int32, device=images.device).expand_as(flat)
    return hist.scatter_add_(1, flat, ones).view(n, c, 256)


def _equalize_luts(images: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """``ImageOps.equalize``: ``lut[i] = (step//2 + #pixels below i) // step`` per channel, with
    ``step = (#pixels - #pixels at the max value) // 255``; identity when ``step`` is 0."""
    hist = _histograms(images)
    total = images.shape[2] * images.shape[3]
    top = images.reshape(*images.shape[:2], -1).amax(2, keepdim=True).long()
    step = (total - hist.gather(2, top)) // 255
    below = hist.cumsum(2, dtype=torch.int32) - hist
    safe = step.clamp(min=1)
    lut = ((safe // 2 + below) // safe).clamp_(max=255)
    ident = torch.arange(256, dtype=torch.int32, device=images.device).expand_as(lut)
    return _to_uint8(torch.where(step > 0, lut, ident))


def _contrast_luts(images: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """``ImageEnhance.Contrast``: blend with the rounded mean of the L image (a per-sample table)."""
    n, c = images.shape[:2]
    lum = _luminance(images).reshape(n, -1).long()
    count = lum.shape[1]
    # int(sum / count + 0.5) as ImageStat computes it, in exact integer arithmetic.
    mean = ((2 * lum.sum(1) + count) // (2 * count)).view(n, 1)
    v = torch.arange(256, device=images.device).view(1, 256)
    lut = _blend(mean, v, _factor_table(images.device)[levels].view(n, 1))
    return lut.unsqueeze(1).expand(n, c, 256)


def _color(images: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """``ImageEnhance.Color``: blend with the L image."""
    alpha = _factor_table(images.device)[levels].view(-1, 1, 1, 1)
    return _blend(_luminance(images), images, alpha)


def _smooth(images: torch.Tensor) -> torch.Tensor:
    """Pillow's ``ImageFilter.SMOOTH`` (3x3 kernel 1,1,1/1,5,1/1,1,1 over 13, rounded), as float32.

    Border pixels are copied unchanged, as Pillow's ``ImagingFilter3x3`` does. Sums are exact
    (int16); ``floor((s + 6.5) / 13)`` is Pillow's rounding of ``s / 13`` and never
    sits on a tie (``s / 13 + 0.5`` is at least 1/26 away from an integer).
    """
    x = images.to(torch.int16)  # sums stay below 13 * 255
    rows = x[..., :-2] + x[..., 1:-1] + x[..., 2:]
    s = rows[..., :-2, :] + rows[..., 1:-1, :] + rows[..., 2:, :]
    s.add_(x[..., 1:-1, 1:-1], alpha=4)
    out = images.float()
    out[..., 1:-1, 1:-1] = s.float().add_(6.5).div_(13).floor_()
    return out


def _sharpness(images: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """``ImageEnhance.Sharpness``: blend with SMOOTH (so border pixels stay unchanged)."""
    if images.shape[2] < 3 or images.shape[3] < 3:  # Pillow copies images smaller than the kernel
        return images.clone()
    alpha = _factor_table(images.device)[levels].view(-1, 1, 1, 1)
    return _blend(_smooth(images), images, alpha)


# --------------------------------------------------------------------------------------------
# The executor: per step, sort the batch by op so each op family is one contiguous slice
# --------------------------------------------------------------------------------------------

OpKind = Literal["warp", "lut", "color", "sharpness"]
_STAT_LUT_BUILDERS = {"AutoContrast": _autocontrast_luts, "Equalize": _equalize_luts, "Contrast": _contrast_luts}
#: Families in execution order and their ops; inside a family the ops are in slot order.
_FAMILIES: tuple[tuple[OpKind, tuple[str, ...]], ...] = (
    ("warp", _WARP_OPS),
    ("lut", _STATIC_LUT_OPS + tuple(_STAT_LUT_BUILDERS)),
    ("color", ("Color",)),
    ("sharpness", ("Sharpness",)),
)
_SORTED_OPS: tuple[str, ...] = tuple(op for _, ops in _FAMILIES for op in ops)
_NO_OP = len(_SORTED_OPS)  # sort position of "nothing to do"
_KEYS = _NO_OP + 1  # sort positions per fusion group


def _op_table(values: dict[str, int], default: int) -> list[int]:
    """Per ``OP_NAMES`` index (plus a last entry for ``-1`` = no op) -> value."""
    return [values.get(op, default) for op in OP_NAMES] + [default]


_POSITION = _op_table({op: i for i, op in enumerate(_SORTED_OPS)}, _NO_OP)
_WARP_SLOT = _op_table({op: i for i, op in enumerate(_WARP_OPS)}, -1)
_STATIC_SLOT = _op_table({op: i for i, op in enumerate(_STATIC_LUT_OPS)}, -1)


@dataclass(frozen=True)
class _StepOps:
    """One step's per-sample parameters: op (index into ``OP_NAMES``, -1 = none), level, sign,
    Cutout centre ``(row, col)``."""

    op: torch.Tensor
    level: torch.Tensor
    sign: torch.Tensor
    center: torch.Tensor

    def select(self, index: torch.Tensor) -> "_StepOps":
        return _StepOps(*(t.index_select(0, index) for t in (self.op, self.level, self.sign, self.center)))

    def rows(self, sl: slice) -> "_StepOps":
        return _StepOps(self.op[sl], self.level[sl], self.sign[sl], self.center[sl])

    def where(self, mask: torch.Tensor, other: "_StepOps") -> "_StepOps":
        return _StepOps(
            torch.where(mask, self.op, other.op),
            torch.where(mask, self.level, other.level),
            torch.where(mask, self.sign, other.sign),
            torch.where(mask.unsqueeze(1), self.center, other.center),
        )


def _lookup(table: list[int], ops: torch.Tensor) -> torch.Tensor:
    """``table[op]`` for op indices with -1 meaning "no op" (the table's last entry)."""
    return _constant(tuple(table), torch.long, ops.device)[ops]


def _maps_for(step: _StepOps, height: int, width: int, cutout_rows: slice | None = None) -> torch.Tensor:
    """Index maps of warp ops; Cutout boxes on ``cutout_rows`` (or on every Cutout row if None)."""
    slot = _lookup(_WARP_SLOT, step.op)
    maps = _warp_maps(slot, step.level, step.sign, height, width)
    if cutout_rows is None:  # rows in any order: boxes of size 0 where the op is not Cutout
        is_cut = slot == _WARP_OPS.index("Cutout")
        if not bool(is_cut.any()):
            return maps
        return _cutout_boxes(maps, step.center, torch.where(is_cut, step.level, 0), height, width)
    if cutout_rows.stop > cutout_rows.start:
        maps[cutout_rows] = _cutout_boxes(
            maps[cutout_rows], step.center[cutout_rows], step.level[cutout_rows], height, width
        )
    return maps


def _static_rows(step: _StepOps) -> torch.Tensor:
    """``(n, 256)`` image-independent tables of static LUT ops (rows of other ops: garbage)."""
    slot = _lookup(_STATIC_SLOT, step.op).clamp(min=0)
    return _static_lut_table(step.op.device)[slot * (PARAMETER_MAX + 1) + step.level]


def _run_family(
    kind: OpKind,
    x: torch.Tensor,
    counts: list[int],
    step: _StepOps,
    pre: _StepOps | None,
    fill: torch.Tensor,
) -> torch.Tensor:
    """Apply one family to ``x``, whose rows are sorted by op (``counts`` rows per op, in family
    order). ``pre``: an op to compose exactly in front of each row's op (same family), or None."""
    bounds = [0]
    for k in counts:
        bounds.append(bounds[-1] + k)
    if kind == "warp":
        h, w = x.shape[2:]
        cut = _WARP_OPS.index("Cutout")
        maps = _maps_for(step, h, w, slice(bounds[cut], bounds[cut + 1]))
        if pre is not None:  # warp then warp: one gather through the composed map
            maps = compose_index(_maps_for(pre, h, w), maps)
        return remap(x, maps, fill)
    if kind == "lut":
        n, c = x.shape[:2]
        lut = torch.empty(n, c, 256, dtype=torch.uint8, device=x.device)
        s = len(_STATIC_LUT_OPS)
        if bounds[s]:
            lut[: bounds[s]] = _static_rows(step.rows(slice(0, bounds[s]))).unsqueeze(1)
        for i, build in enumerate(_STAT_LUT_BUILDERS.values(), start=s):
            a, b = bounds[i], bounds[i + 1]
            if b > a:
                lut[a:b] = build(x[a:b], step.level[a:b])
        if pre is not None:  # table then table: one lookup through the composed table
            lut = lut.gather(2, _static_rows(pre).long().unsqueeze(1).expand(n, c, 256))
        return apply_lut(x, lut)
    if kind == "color":
        return _color(x, step.level)
    return _sharpness(x, step.level)


def _apply_step(x: torch.Tensor, step: _StepOps, pre: _StepOps, fill: torch.Tensor) -> torch.Tensor:
    """One op per sample (plus, for fused samples, the previous op composed into it)."""
    n, dev = x.shape[0], x.device
    fused = pre.op >= 0
    position = _lookup(_POSITION, step.op) + fused.long() * _KEYS
    counts = torch.bincount(position, minlength=2 * _KEYS).tolist()  # the step's only host sync
    if counts[_NO_OP] == n:
        return x
    order = torch.argsort(position, stable=True)
    xs, st, pr = x.index_select(0, order), step.select(order), pre.select(order)
    pieces, start = [], 0
    for group in (0, 1):  # sorted order: unfused ops, no-op rows, then fused ops
        pos = group * _KEYS
        for kind, family_ops in _FAMILIES:
            per_op = counts[pos : pos + len(family_ops)]
            pos += len(family_ops)
            m = sum(per_op)
            if m:
                sl = slice(start, start + m)
                pieces.append(_run_family(kind, xs[sl], per_op, st.rows(sl), pr.rows(sl) if group else None, fill))
                start += m
        if group == 0:
            pieces.append(xs[start : start + counts[_NO_OP]])
            start += counts[_NO_OP]
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(n, device=dev)
    return torch.cat(pieces).index_select(0, inverse)


def _fuse_steps(steps: list[_StepOps]) -> tuple[list[_StepOps], list[_StepOps]]:
    """Move op k into step k+1 as a composed "pre" op where composing is exact: two warps (index
    maps compose; both fills are the mean) or two image-independent tables. Chains stop at two."""
    n, dev = steps[0].op.shape[0], steps[0].op.device
    none = _StepOps(
        torch.full((n,), -1, dtype=torch.long, device=dev),
        torch.zeros(n, dtype=torch.long, device=dev),
        torch.ones(n, dtype=torch.long, device=dev),
        torch.zeros(n, 2, dtype=torch.long, device=dev),
    )
    cur, pre = list(steps), [none] * len(steps)
    for k in range(len(steps) - 1):
        a, b = cur[k].op, cur[k + 1].op
        warp = (_lookup(_WARP_SLOT, a) >= 0) & (_lookup(_WARP_SLOT, b) >= 0)
        table = (_lookup(_STATIC_SLOT, a) >= 0) & (_lookup(_STATIC_SLOT, b) >= 0)
        fuse = (warp | table) & (pre[k].op < 0)
        pre[k + 1] = cur[k].where(fuse, none)
        cur[k] = none.where(fuse, cur[k])
    return cur, pre


def apply_op_sequence(
    images: torch.Tensor,
    ops: torch.Tensor,
    levels: torch.Tensor,
    signs: torch.Tensor | None = None,
    centers: torch.Tensor | None = None,
    fill: Fill = 0,
) -> torch.Tensor:
    """Apply per-sample op sequences: sample ``i`` gets ``ops[i, 0]``, then ``ops[i, 1]``, ...

    ``ops`` ``(N, K)`` holds indices into ``OP_NAMES`` (``-1`` = nothing), ``levels`` ``(N, K)``
    magnitudes 0..10, ``signs`` ``(N, K)`` +-1 for geometric ops, ``centers`` ``(N, K, 2)``
    Cutout centres (row, col). Step by step the batch is sorted by op, so each op family is a
    contiguous slice: one gather warps every geometric op and Cutout (per-sample index maps),
    one table lookup applies every LUT op (per-sample per-channel tables), one blend each does
    Color and Sharpness. Consecutive warps of a sample are composed into one index map, and
    consecutive image-independent tables into one table (both exact). No Python loop over
    images. Returns a new uint8 tensor.
    """
    _check_images(images)
    n, c, h, w = images.shape
    dev = images.device
    ops = torch.as_tensor(ops, device=dev).long()
    if ops.dim() != 2 or ops.shape[0] != n:
        raise ValueError(f"ops must have shape ({n}, K), got {tuple(ops.shape)}")
    k_steps = ops.shape[1]
    levels = torch.as_tensor(levels, device=dev).long().expand(n, k_steps)
    signs = torch.ones_like(ops) if signs is None else torch.as_tensor(signs, device=dev).long().expand(n, k_steps)
    if centers is None:
        centers = torch.zeros(n, k_steps, 2, dtype=torch.long, device=dev)
    centers = torch.as_tensor(centers, device=dev).long().expand(n, k_steps, 2)
    if n == 0 or k_steps == 0:
        return images.clone()
    bad_op = (ops < -1) | (ops >= len(OP_NAMES))
    bad_level = (ops >= 0) & ((levels < 0) | (levels > PARAMETER_MAX))
    if bool((bad_op | bad_level).any()):
        raise ValueError(f"ops must be in -1..{len(OP_NAMES) - 1} and levels in 0..{PARAMETER_MAX}")
    steps = [
        _StepOps(ops[:, k], levels[:, k].clamp(0, PARAMETER_MAX), signs[:, k], centers[:, k])
        for k in range(k_steps)
    ]
    cur, pre = _fuse_steps(steps)
    fill_t = _fill(fill, c, dev)
    out = images
    for k in range(k_steps):
        out = _apply_step(out, cur[k], pre[k], fill_t)
    return out.clone() if out is images else out


# --------------------------------------------------------------------------------------------
# One op on a batch (the public per-op functions) and the registry
# --------------------------------------------------------------------------------------------


def _single(
    name: str,
    images: torch.Tensor,
    levels: Levels,
    signs: torch.Tensor | int | None = None,
    centers: torch.Tensor | None = None,
    fill: Fill = 0,
) -> torch.Tensor:
    _check_images(images)
    n, dev = images.shape[0], images.device
    lv = _levels(levels, n, dev)
    ops = torch.full((n, 1), OP_NAMES.index(name), dtype=torch.long, device=dev)
    sg = _signs(signs, n, dev).view(n, 1)
    ce = None if centers is None else torch.as_tensor(centers, device=dev).long().view(n, 1, 2)
    return apply_op_sequence(images, ops, lv.view(n, 1), sg, ce, fill)


def auto_contrast(images: torch.Tensor, levels: Levels = 0) -> torch.Tensor:
    """``ImageOps.autocontrast`` per channel; the magnitude is ignored (as in PBA)."""
    return _single("AutoContrast", images, levels)


def equalize(images: torch.Tensor, levels: Levels = 0) -> torch.Tensor:
    """``ImageOps.equalize`` per channel; the magnitude is ignored."""
    return _single("Equalize", images, levels)


def invert(images: torch.Tensor, levels: Levels = 0) -> torch.Tensor:
    """``ImageOps.invert``; the magnitude is ignored."""
    return _single("Invert", images, levels)


def posterize(images: torch.Tensor, levels: Levels) -> torch.Tensor:
    """``ImageOps.posterize(img, posterize_bits(level))``."""
    return _single("Posterize", images, levels)


def solarize(images: torch.Tensor, levels: Levels) -> torch.Tensor:
    """``ImageOps.solarize(img, solarize_threshold(level))``."""
    return _single("Solarize", images, levels)


def color(images: torch.Tensor, levels: Levels) -> torch.Tensor:
    """``ImageEnhance.Color(img).enhance(enhance_factor(level))``."""
    return _single("Color", images, levels)


def contrast(images: torch.Tensor, levels: Levels) -> torch.Tensor:
    """``ImageEnhance.Contrast(img).enhance(enhance_factor(level))``."""
    return _single("Contrast", images, levels)


def brightness(images: torch.Tensor, levels: Levels) -> torch.Tensor:
    """``ImageEnhance.Brightness(img).enhance(enhance_factor(level))``."""
    return _single("Brightness", images, levels)


def sharpness(images: torch.Tensor, levels: Levels) -> torch.Tensor:
    """``ImageEnhance.Sharpness(img).enhance(enhance_factor(level))``; borders unchanged."""
    return _single("Sharpness", images, levels)


def rotate(images: torch.Tensor, levels: Levels, signs=None, fill: Fill = 0) -> torch.Tensor:
    """``Image.rotate(sign * 3*level)`` (counter-clockwise, about the centre, NEAREST)."""
    return _single("Rotate", images, levels, signs, None, fill)


def shear_x(images: torch.Tensor, levels: Levels, signs=None, fill: Fill = 0) -> torch.Tensor:
    """PBA ShearX: affine ``(1, s, 0, 0, 1, 0)``, ``s = sign * 0.03*level`` (not centred, as PBA)."""
    return _single("ShearX", images, levels, signs, None, fill)


def shear_y(images: torch.Tensor, levels: Levels, signs=None, fill: Fill = 0) -> torch.Tensor:
    """PBA ShearY: affine ``(1, 0, 0, s, 1, 0)``."""
    return _single("ShearY", images, levels, signs, None, fill)


def translate_x(images: torch.Tensor, levels: Levels, signs=None, fill: Fill = 0) -> torch.Tensor:
    """PBA TranslateX: affine ``(1, 0, t, 0, 1, 0)``; positive ``t`` moves content left."""
    return _single("TranslateX", images, levels, signs, None, fill)


def translate_y(images: torch.Tensor, levels: Levels, signs=None, fill: Fill = 0) -> torch.Tensor:
    """PBA TranslateY: affine ``(1, 0, 0, 0, 1, t)``; positive ``t`` moves content up."""
    return _single("TranslateY", images, levels, signs, None, fill)


def cutout(images: torch.Tensor, levels: Levels, centers: torch.Tensor, fill: Fill = 0) -> torch.Tensor:
    """PBA in-policy Cutout: a square of side ``cutout_size(level)`` centred at ``centers``
    ``(N, 2)`` (row, col), rows/cols ``[c - side//2, c + side//2)`` clipped, set to ``fill``."""
    return _single("Cutout", images, levels, None, centers, fill)


@dataclass(frozen=True)
class OpSpec:
    """One registered op: ``spec(images, levels, signs=, centers=, fill=)`` calls it uniformly.

    ``kind`` says how the executor batches it: ``"warp"`` ops share one index-map gather per
    step, ``"lut"`` ops one table lookup per step.
    """

    name: str
    kind: OpKind
    signed: bool = False

    def __call__(
        self,
        images: torch.Tensor,
        levels: Levels = 0,
        *,
        signs: torch.Tensor | int | None = None,
        centers: torch.Tensor | None = None,
        fill: Fill = 0,
    ) -> torch.Tensor:
        if self.name == "Cutout" and centers is None:
            raise ValueError("Cutout needs per-sample centers (N, 2)")
        return _single(self.name, images, levels, signs if self.signed else None, centers, fill)


_KIND = {op: kind for kind, ops in _FAMILIES for op in ops}
#: Registry: op name -> :class:`OpSpec`, in ``OP_NAMES`` order.
OPS: dict[str, OpSpec] = {
    name: OpSpec(name, _KIND[name], signed=name in GEOMETRIC_OPS) for name in OP_NAMES
}


def apply_op(
    name: str,
    images: torch.Tensor,
    levels: Levels = 0,
    *,
    signs: torch.Tensor | int | None = None,
    centers: torch.Tensor | None = None,
    fill: Fill = 0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Apply one op by name; missing random parameters (signs, centres) come from ``generator``."""
    if name not in OPS:
        raise ValueError(f"unknown op {name!r}; expected one of {', '.join(OP_NAMES)}")
    spec = OPS[name]
    n, dev = images.shape[0], images.device
    if spec.signed and signs is None and generator is not None:
        signs = torch.where(torch.rand(n, generator=generator, device=dev) < 0.5, -1, 1)
    if name == "Cutout" and centers is None:
        if generator is None:
            raise ValueError("Cutout needs centers or a generator")
        u = torch.rand(n, 2, generator=generator, device=dev)
        size = torch.tensor([images.shape[2], images.shape[3]], device=dev)
        centers = (u * size).long().minimum(size - 1)
    return spec(images, levels, signs=signs, centers=centers, fill=fill)
