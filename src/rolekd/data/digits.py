"""The embedded demo set: scikit-learn's handwritten digits as 3x32x32 uint8 images.

It ships inside scikit-learn, so ``rolekd run`` works offline with nothing downloaded. The 8x8
images are upscaled to 32x32 and replicated to 3 channels so every CIFAR op and model applies.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .splits import balanced_split
from .tensors import Dataset, ImageSet

TEST_SIZE = 360  # 20 % of 1797, class-balanced, fixed


def load_digits_dataset(size: int = 32) -> Dataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.from_numpy(bunch.images).float().unsqueeze(1) / 16.0  # (N, 1, 8, 8) in [0, 1]
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    x = (x.clamp(0, 1) * 255).round().to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
    y = torch.from_numpy(bunch.target).long()
    test_idx, _ = balanced_split(y, TEST_SIZE, 0, seed=0)
    is_test = torch.zeros(len(y), dtype=torch.bool)
    is_test[test_idx] = True
    train_idx = torch.nonzero(~is_test).flatten()
    return Dataset("digits", ImageSet(x[train_idx], y[train_idx]), ImageSet(x[test_idx], y[test_idx]), 10, [str(i) for i in range(10)])
