"""PBA's 15 augmentation ops, one Pillow call per image: the reference the batched ops are checked against.

This is the reference implementation following arcelien/pba's ``pba/augmentation_transforms.py``
formulas (``int_parameter`` / ``float_parameter`` spelled out literally here, not taken from
:mod:`rolekd.augment.ops`), on RGB images with ``fillcolor`` = the dataset mean, which is the
fill semantic the package implements. It is used by the tests and the benchmarks only; nothing
in the package imports it. It needs Pillow, which is already a dependency of rolekd
(``pyproject.toml``).

Translate and Cutout scale by ``size / 32`` for sizes other than 32x32, as
:mod:`rolekd.augment.ops` does (PBA hard-codes 32); at 32x32 they are PBA's formulas exactly.
"""

from __future__ import annotations

from PIL import Image, ImageEnhance, ImageOps

from .ops import GEOMETRIC_OPS, OP_NAMES

__all__ = ["CIFAR10_MEAN", "CIFAR10_STD", "FILL", "COLOUR_OPS", "pil_op"]

#: PBA's CIFAR-10 normalisation constants (``MEANS`` / ``STDS`` in ``augmentation_transforms.py``).
CIFAR10_MEAN = (0.49139968, 0.48215841, 0.44653091)
CIFAR10_STD = (0.24703223, 0.24348513, 0.26158784)
#: The CIFAR-10 mean as uint8 RGB, ``(125, 123, 114)``: the fill of geometric ops and Cutout.
FILL: tuple[int, int, int] = tuple(int(round(m * 255)) for m in CIFAR10_MEAN)  # type: ignore[assignment]

#: Ops that take neither a sign nor a centre (the rest: Rotate, ShearX/Y, TranslateX/Y, Cutout).
COLOUR_OPS: tuple[str, ...] = tuple(n for n in OP_NAMES if n not in GEOMETRIC_OPS and n != "Cutout")


def pil_op(
    img: Image.Image, name: str, level: int, sign: int = 1, center=(0, 0), fill=FILL
) -> Image.Image:
    """One PBA op on one RGB PIL image, with PBA's formulas and ``fillcolor=fill``.

    ``sign`` (+-1) applies to Rotate, ShearX/Y and TranslateX/Y; ``center`` ``(row, col)`` is
    Cutout's centre, whose square covers rows/cols ``[c - side//2, c + side//2)``, clipped.
    The input is not modified; an empty Cutout square returns ``img`` itself.
    """
    w, h = img.size
    if name == "AutoContrast":
        return ImageOps.autocontrast(img)
    if name == "Equalize":
        return ImageOps.equalize(img)
    if name == "Invert":
        return ImageOps.invert(img)
    if name == "Posterize":
        return ImageOps.posterize(img, 4 - int(level * 4 / 10))
    if name == "Solarize":
        return ImageOps.solarize(img, 256 - int(level * 256 / 10))
    if name in ("Color", "Contrast", "Brightness", "Sharpness"):
        factor = float(level) * 1.8 / 10 + 0.1
        return getattr(ImageEnhance, name)(img).enhance(factor)
    if name == "Rotate":
        return img.rotate(sign * int(level * 30 / 10), fillcolor=fill)
    if name == "ShearX":
        return img.transform((w, h), Image.AFFINE, (1, sign * level * 0.3 / 10, 0, 0, 1, 0), fillcolor=fill)
    if name == "ShearY":
        return img.transform((w, h), Image.AFFINE, (1, 0, 0, sign * level * 0.3 / 10, 1, 0), fillcolor=fill)
    if name == "TranslateX":
        t = sign * int(level * 10 / 10) * w / 32
        return img.transform((w, h), Image.AFFINE, (1, 0, t, 0, 1, 0), fillcolor=fill)
    if name == "TranslateY":
        t = sign * int(level * 10 / 10) * h / 32
        return img.transform((w, h), Image.AFFINE, (1, 0, 0, 0, 1, t), fillcolor=fill)
    if name == "Cutout":
        half = int(int(level * 20 / 10) * min(h, w) / 32) // 2
        if half <= 0:
            return img
        cy, cx = center
        out = img.copy()  # paste into a copy: ~5x faster than a numpy round trip (matters to the benchmark)
        out.paste(fill, (max(0, cx - half), max(0, cy - half), min(w, cx + half), min(h, cy + half)))
        return out
    raise KeyError(name)
