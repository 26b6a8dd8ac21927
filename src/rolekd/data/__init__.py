"""Datasets as uint8 tensors on the training device: CIFAR-10/100, the embedded digits, a user's folder."""

from __future__ import annotations

import os
from pathlib import Path

from .cifar import DataError, load_cifar
from .digits import load_digits_dataset
from .folder import load_folder
from .splits import SplitError, balanced_split
from .tensors import Dataset, ImageSet, Normalizer, batch_indices, channel_stats, steps_per_epoch

DEFAULT_DATA_DIR = "~/.cache/rolekd"


def data_dir(explicit: str | None = None) -> Path:
    """``--data-dir``, else ``$ROLEKD_DATA``, else ``~/.cache/rolekd``."""
    return Path(explicit or os.environ.get("ROLEKD_DATA") or DEFAULT_DATA_DIR).expanduser()


def load_dataset(name: str, root: str | None = None, image_size: int = 32, download: bool = True) -> Dataset:
    if name == "digits":
        return load_digits_dataset(image_size)
    if name in ("cifar10", "cifar100"):
        return load_cifar(name, data_dir(root), download)
    if name == "folder":
        if root is None:
            raise DataError("dataset 'folder' needs data.root")
        return load_folder(root, image_size)
    raise DataError(f"unknown dataset {name!r}; expected digits, cifar10, cifar100 or folder")


def reduced_split(ds: Dataset, n_train: int, n_val: int, seed: int) -> Dataset:
    """The search's split: ``n_train`` training and ``n_val`` validation images from the training set."""
    train_idx, val_idx = balanced_split(ds.train.labels, n_train, n_val, seed)
    return Dataset(f"{ds.name}-reduced", ds.train.subset(train_idx), ds.train.subset(val_idx), ds.num_classes, ds.classes)


__all__ = [
    "DataError", "Dataset", "ImageSet", "Normalizer", "SplitError", "balanced_split", "batch_indices",
    "channel_stats", "data_dir", "load_cifar", "load_dataset", "load_digits_dataset", "load_folder",
    "reduced_split", "steps_per_epoch",
]
