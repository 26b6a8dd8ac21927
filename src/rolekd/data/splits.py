"""The paper's reduced split: a small class-balanced training set and a disjoint validation set."""

from __future__ import annotations

import torch
from torch import Tensor


class SplitError(ValueError):
    pass


def balanced_split(labels: Tensor, n_train: int, n_val: int, seed: int) -> tuple[Tensor, Tensor]:
    """Class-balanced, disjoint (train, val) indices, fixed by ``seed`` and independent of device.

    Each class contributes ``n // num_classes`` images (the remainder goes to the first classes
    in a seeded order), so 4,000 CIFAR-10 images are 400 per class as in PBA.
    """
    labels = labels.cpu()
    classes = torch.unique(labels)
    k = len(classes)
    if n_train + n_val > len(labels):
        raise SplitError(
            f"data.reduced_train + data.reduced_val = {n_train + n_val} is larger than the "
            f"{len(labels)} training images; expected at most {len(labels)}"
        )
    gen = torch.Generator().manual_seed(seed)
    per_class = [torch.nonzero(labels == c).flatten() for c in classes]
    per_class = [idx[torch.randperm(len(idx), generator=gen)] for idx in per_class]
    class_order = torch.randperm(k, generator=gen).tolist()

    def quota(n: int) -> list[int]:
        q = [n // k] * k
        for c in class_order[: n % k]:
            q[c] += 1
        return q

    q_train, q_val = quota(n_train), quota(n_val)
    train, val = [], []
    for c, idx in enumerate(per_class):
        if q_train[c] + q_val[c] > len(idx):
            raise SplitError(
                f"class {int(classes[c])} has {len(idx)} images, fewer than the {q_train[c] + q_val[c]} "
                f"a balanced split of {n_train}+{n_val} needs; lower data.reduced_train/reduced_val"
            )
        train.append(idx[: q_train[c]])
        val.append(idx[q_train[c] : q_train[c] + q_val[c]])
    perm_t = torch.randperm(n_train, generator=gen)
    perm_v = torch.randperm(n_val, generator=gen)
    return torch.cat(train)[perm_t], torch.cat(val)[perm_v]
