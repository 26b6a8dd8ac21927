"""In-memory image sets as uint8 tensors, and batching on the training device.

A set lives on one device as uint8 ``(N, C, H, W)`` with int64 labels; batches are index slices
drawn with a seeded generator on that device, so there is no per-image Python work and no
DataLoader worker.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch
from torch import Tensor


@dataclass
class ImageSet:
    images: Tensor  # uint8 (N, C, H, W)
    labels: Tensor  # int64 (N,)

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError(f"labels must have shape ({self.images.shape[0]},), got {tuple(self.labels.shape)}")
        self.labels = self.labels.long()

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def device(self) -> torch.device:
        return self.images.device

    def to(self, device: torch.device | str) -> "ImageSet":
        return ImageSet(self.images.to(device), self.labels.to(device))

    def subset(self, index: Tensor) -> "ImageSet":
        index = index.to(self.images.device)
        return ImageSet(self.images[index], self.labels[index])


@dataclass
class Dataset:
    """A train/test pair with the statistics every consumer needs."""

    name: str
    train: ImageSet
    test: ImageSet
    num_classes: int
    classes: list[str]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train.images.shape[1:])  # type: ignore[return-value]


def channel_stats(images: Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std in [0, 1] units, computed in chunks to bound memory."""
    c = images.shape[1]
    total = torch.zeros(c, dtype=torch.float64)
    sq = torch.zeros(c, dtype=torch.float64)
    n = 0
    for chunk in images.split(4096):
        x = chunk.to(torch.float64).div_(255).transpose(0, 1).reshape(c, -1)
        total += x.sum(1).cpu()
        sq += (x * x).sum(1).cpu()
        n += x.shape[1]
    mean = total / max(n, 1)
    std = (sq / max(n, 1) - mean * mean).clamp_min(1e-12).sqrt()
    return tuple(mean.tolist()), tuple(std.tolist())


class Normalizer:
    """uint8 pixels -> float model input ``(x/255 - mean)/std``, on the batch's device."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        self.mean, self.std = tuple(mean), tuple(std)
        self._cache: dict[tuple[torch.device, torch.dtype], tuple[Tensor, Tensor]] = {}

    def _params(self, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        key = (device, dtype)
        if key not in self._cache:
            m = torch.tensor(self.mean, device=device, dtype=dtype).view(1, -1, 1, 1)
            s = torch.tensor(self.std, device=device, dtype=dtype).view(1, -1, 1, 1)
            self._cache[key] = (m, 1.0 / (s * 255.0))
        return self._cache[key]

    def __call__(self, images: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
        m, inv = self._params(images.device, dtype)
        return (images.to(dtype) - m * 255.0) * inv

    def denormalize(self, x: Tensor) -> Tensor:
        """Model input -> float pixels in [0, 255] (for agents that generate in input space)."""
        m, inv = self._params(x.device, x.dtype)
        return x / inv + m * 255.0

    @property
    def fill(self) -> tuple[int, ...]:
        """The dataset mean as uint8 pixels: PBA's fill for emptied pixels."""
        return tuple(int(round(v * 255)) for v in self.mean)


def batch_indices(
    n: int, batch_size: int, generator: torch.Generator | None, drop_last: bool, device: torch.device
) -> Iterator[Tensor]:
    """Index batches over ``range(n)``: shuffled with ``generator`` (on ``device``) or in order when None."""
    if generator is not None:
        order = torch.randperm(n, generator=generator, device=device)
    else:
        order = torch.arange(n, device=device)
    stop = n - n % batch_size if drop_last and n >= batch_size else n
    for start in range(0, stop, batch_size):
        yield order[start : start + batch_size]


def steps_per_epoch(n: int, batch_size: int, drop_last: bool) -> int:
    if drop_last and n >= batch_size:
        return n // batch_size
    return -(-n // batch_size)
