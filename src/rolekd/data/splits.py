"""Class-balanced, seeded splits of a training set: the rows' subset, the search's training images, and the
search's validation images (PBA's reduced split, or a split held out from every row)."""

from __future__ import annotations

import torch
from torch import Tensor

REDUCED = ("data.reduced_train", "data.reduced_val")


class SplitError(ValueError):
    pass


def balanced_split(labels: Tensor, n_train: int, n_val: int, seed: int, names: tuple[str, str] = REDUCED,
                   pool: str = "training images", reserve: int = 0) -> tuple[Tensor, Tensor]:
    """Class-balanced, disjoint (train, val) indices, fixed by ``seed`` and independent of device.

    Each class contributes ``n // num_classes`` images (the remainder goes to the first classes
    in a seeded order), so 4,000 CIFAR-10 images are 400 per class as in PBA. ``reserve`` images of each class
    must stay out of both. ``names`` are the config fields that asked for ``n_train`` and ``n_val`` and ``pool``
    what ``labels`` are, for the one-line errors.
    """
    labels = labels.cpu()
    classes = torch.unique(labels)
    k = len(classes)
    asked = " + ".join(n for n, size in zip(names, (n_train, n_val)) if size) or names[0]
    left = "" if not reserve else f" less {reserve} per class for the rows"
    kept = "" if not reserve else f" (+{reserve} kept for the rows)"
    if n_train + n_val > len(labels) - reserve * k:
        raise SplitError(f"{asked} = {n_train + n_val} is larger than the {len(labels)} {pool}{left}; "
                         f"expected at most {len(labels) - reserve * k}")
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
        if q_train[c] + q_val[c] + reserve > len(idx):
            raise SplitError(
                f"class {int(classes[c])} has {len(idx)} {pool}, fewer than the {q_train[c] + q_val[c]}{kept} that "
                f"a class-balanced {asked} = {n_train + n_val} needs; expected {asked} at most "
                f"{k * (min(len(i) for i in per_class) - reserve)}"
            )
        train.append(idx[: q_train[c]])
        val.append(idx[q_train[c] : q_train[c] + q_val[c]])
    perm_t = torch.randperm(n_train, generator=gen)
    perm_v = torch.randperm(n_val, generator=gen)
    return torch.cat(train)[perm_t], torch.cat(val)[perm_v]


def hold_out(labels: Tensor, n: int, seed: int, exclude: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """``(kept, held)``: ``n`` class-balanced indices of ``labels`` held out for the search's validation, drawn
    from the images not in ``exclude`` (the rows' subset, when one is drawn first); ``kept`` are the others,
    in order. Without a subset the rows train on ``kept``, so every class keeps at least one image."""
    labels = labels.cpu()
    free = torch.ones(len(labels), dtype=torch.bool)
    if exclude is not None:
        free[exclude.cpu()] = False
    candidates = torch.nonzero(free).flatten()
    pool = "training images outside data.train_subset" if exclude is not None else "training images"
    _, picked = balanced_split(labels[candidates], 0, n, seed, names=("data.reduced_val (held out)",) * 2, pool=pool,
                               reserve=0 if exclude is not None else 1)
    keep = torch.ones(len(labels), dtype=torch.bool)
    keep[candidates[picked]] = False
    return torch.nonzero(keep).flatten(), candidates[picked]
