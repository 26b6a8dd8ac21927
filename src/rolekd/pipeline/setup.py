"""What every stage needs before training: the device, the data on it, and its normaliser."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..config import DataConfig, ExperimentConfig
from ..data import (
    Dataset, ImageSet, Normalizer, SplitError, balanced_split, channel_stats, dataset_spec, hold_out, load_dataset,
)


@dataclass
class Prepared:
    full: Dataset  # train (the images every row trains on) / test, on the device
    normalizer: Normalizer
    device: torch.device
    search_val: ImageSet | None = None  # data.search_val: held_out: the search's validation split, no row's images

    def reduced(self, cfg: ExperimentConfig) -> Dataset:
        """The search's split: ``reduced_train`` of the rows' training images, and its validation images (held out
        from every row, or the rows' other images: ``data.search_val``); never a test image."""
        train_idx, val_idx = self.search_indices(cfg)
        ds = self.full
        val = self.search_val if val_idx is None else ds.train.subset(val_idx)
        return Dataset(f"{ds.name}-reduced", ds.train.subset(train_idx), val, ds.num_classes, ds.classes)

    def search_indices(self, cfg: ExperimentConfig) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Indices into the rows' training images of the search's training and validation images (``None``: the
        held-out split); cheap, so a run checks that the split can be carved before it trains anything."""
        d = cfg.data
        held_out = self.search_val is not None
        train_idx, val_idx = balanced_split(self.full.train.labels, d.reduced_train, 0 if held_out else d.reduced_val,
                                            d.split_seed, pool="training images the rows train on")
        return train_idx, None if held_out else val_idx


def split_training_set(ds: Dataset, d: DataConfig) -> tuple[Dataset, ImageSet | None]:
    """The rows' training set (``train_subset``, else all) and, for ``search_val: held_out``, the search's
    validation split that no row trains on. The subset is drawn first, so the rows' images do not depend on the
    held-out size (nor on search_val when a subset is drawn); the test split is passed through untouched."""
    rows = None
    if d.train_subset is not None:
        if d.train_subset > len(ds.train):
            raise SplitError(f"data.train_subset = {d.train_subset} is larger than the {len(ds.train)} training "
                             f"images of {ds.name}; expected at most {len(ds.train)}")
        rows, _ = balanced_split(ds.train.labels, d.train_subset, 0, d.split_seed, names=("data.train_subset", ""),
                                 pool=f"training images of {ds.name}")
    held = None
    if d.search_val == "held_out":
        kept, held = hold_out(ds.train.labels, d.reduced_val, d.split_seed, exclude=rows)
        rows = kept if rows is None else rows
    if rows is None:
        return ds, None
    search_val = None if held is None else ds.train.subset(held)
    return Dataset(ds.name, ds.train.subset(rows), ds.test, ds.num_classes, ds.classes), search_val


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: 'cuda' was requested but no CUDA device is available; use device: auto or cpu")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def prepare(cfg: ExperimentConfig, data_dir: str | None = None, device: torch.device | None = None) -> Prepared:
    """Load the configured dataset once and move it to the training device.

    Normalisation statistics come from the rows' training images, so the teacher and every student
    (and every search trial) see identically normalised inputs.
    """
    d = cfg.data
    root = d.root if dataset_spec(d.dataset).needs_root else data_dir
    ds, search_val = split_training_set(load_dataset(d.dataset, root, d.image_size), d)
    normalizer = Normalizer(*channel_stats(ds.train.images))
    dev = device or resolve_device(cfg.device)
    ds = Dataset(ds.name, ds.train.to(dev), ds.test.to(dev), ds.num_classes, ds.classes)
    return Prepared(ds, normalizer, dev, None if search_val is None else search_val.to(dev))


def share(ds: Dataset, normalizer: Normalizer) -> dict[str, Any]:
    """A data set as plain data for Ray's object store (uint8 images as numpy): put once, read by every worker
    (search trials, parallel trainings) without the data directory on its node."""
    return {
        "name": ds.name, "num_classes": ds.num_classes, "classes": list(ds.classes),
        "train": (ds.train.images.cpu().numpy(), ds.train.labels.cpu().numpy()),
        "val": (ds.test.images.cpu().numpy(), ds.test.labels.cpu().numpy()),
        "mean": normalizer.mean, "std": normalizer.std,
    }


def unshare(d: dict[str, Any], device: torch.device) -> Prepared:
    """The :class:`Prepared` data of :func:`share`, on ``device``."""
    train = ImageSet(_tensor(d["train"][0], device), _tensor(d["train"][1], device))
    test = ImageSet(_tensor(d["val"][0], device), _tensor(d["val"][1], device))
    return Prepared(Dataset(d["name"], train, test, d["num_classes"], d["classes"]), Normalizer(d["mean"], d["std"]),
                    device)


def _tensor(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """Zero-copy view of the object store's read-only array on CPU (training never writes images)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(array).to(device)
