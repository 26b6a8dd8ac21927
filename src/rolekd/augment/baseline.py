"""The paper's baseline augmentation as batched tensor ops: random crop with padding, horizontal
flip, and PBA's final-training cutout. Padding and cutout fill with the dataset mean, which is
what PBA's zeros in normalised space amount to.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from .base import AugmentContext, Batch


def _fill_like(images: Tensor, fill: tuple[int, ...]) -> Tensor:
    return torch.tensor(fill, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)


def random_crop(images: Tensor, padding: int, generator: torch.Generator, fill: tuple[int, ...]) -> Tensor:
    """Pad by ``padding`` on each side, then crop back at a per-sample offset in 0..2*padding."""
    n, c, h, w = images.shape
    if padding == 0 or n == 0:
        return images
    padded = _fill_like(images, fill).expand(n, c, h + 2 * padding, w + 2 * padding).clone()
    padded[:, :, padding : padding + h, padding : padding + w] = images
    off = torch.randint(0, 2 * padding + 1, (n, 2), generator=generator, device=images.device)
    rows = (off[:, 0:1] + torch.arange(h, device=images.device)).view(n, 1, h, 1).expand(n, c, h, w + 2 * padding)
    out = padded.gather(2, rows)
    cols = (off[:, 1:2] + torch.arange(w, device=images.device)).view(n, 1, 1, w).expand(n, c, h, w)
    return out.gather(3, cols)


def random_flip(images: Tensor, generator: torch.Generator) -> Tensor:
    """Horizontal flip of each sample with probability 0.5."""
    flip = torch.rand(images.shape[0], generator=generator, device=images.device) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1), images.flip(-1), images)


def square_mask(
    n: int, h: int, w: int, sizes: Tensor, generator: torch.Generator, device: torch.device
) -> Tensor:
    """Bool ``(n, 1, h, w)`` masks of squares with per-sample side ``sizes``, centred uniformly in
    the image and clipped at its borders (PBA's cutout)."""
    cy = torch.randint(0, h, (n,), generator=generator, device=device)
    cx = torch.randint(0, w, (n,), generator=generator, device=device)
    y0, x0 = cy - sizes // 2, cx - sizes // 2
    ys = torch.arange(h, device=device).view(1, h, 1)
    xs = torch.arange(w, device=device).view(1, 1, w)
    inside = (ys >= y0.view(-1, 1, 1)) & (ys < (y0 + sizes).view(-1, 1, 1))
    inside = inside & (xs >= x0.view(-1, 1, 1)) & (xs < (x0 + sizes).view(-1, 1, 1))
    return inside.unsqueeze(1)


def cutout(images: Tensor, size: int, generator: torch.Generator, fill: tuple[int, ...]) -> Tensor:
    n, _, h, w = images.shape
    if size <= 0 or n == 0:
        return images
    sizes = torch.full((n,), size, device=images.device)
    mask = square_mask(n, h, w, sizes, generator, images.device)
    return torch.where(mask, _fill_like(images, fill), images)


class BaselineAugmenter:
    """Crop + flip (+ cutout): the augmentation every run gets after any learned policy."""

    space: Literal["pixel"] = "pixel"

    def __init__(self, crop_padding: int = 4, flip: bool = True, cutout: int = 0) -> None:
        self.crop_padding, self.flip, self.cutout = crop_padding, flip, cutout

    def __call__(self, batch: Batch, ctx: AugmentContext) -> Batch:
        x = batch.images
        scale = x.shape[-1] / 32  # sizes are given at CIFAR resolution
        x = random_crop(x, round(self.crop_padding * scale), ctx.generator, ctx.fill)
        if self.flip:
            x = random_flip(x, ctx.generator)
        x = cutout(x, round(self.cutout * scale), ctx.generator, ctx.fill)
        return batch.with_images(x)

    def __repr__(self) -> str:
        return f"BaselineAugmenter(crop_padding={self.crop_padding}, flip={self.flip}, cutout={self.cutout})"
