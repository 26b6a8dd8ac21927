"""Datasets as uint8 tensors on the training device: CIFAR-10/100, the embedded digits, a user's folder."""

from __future__ import annotations

import os
from pathlib import Path

from .cifar import DataError, load_cifar
from .digits import load_digits_dataset
from .folder import load_folder
from .registry import DatasetSpec, available_datasets, dataset_spec, register_dataset
from .splits import SplitError, balanced_split, hold_out
from .tensors import Dataset, ImageSet, Normalizer, batch_indices, channel_stats, steps_per_epoch

DEFAULT_DATA_DIR = "~/.cache/rolekd"


def data_dir(explicit: str | None = None) -> Path:
    """``--data-dir``, else ``$ROLEKD_DATA``, else ``~/.cache/rolekd``."""
    return Path(explicit or os.environ.get("ROLEKD_DATA") or DEFAULT_DATA_DIR).expanduser()


def _folder(root: str | None, image_size: int, download: bool) -> Dataset:
    if root is None:
        raise DataError("data.root: dataset 'folder' needs data.root, the folder holding <class>/ subfolders")
    return load_folder(root, image_size)


register_dataset("digits", DatasetSpec(lambda root, size, download: load_digits_dataset(size),
                                       "digits (embedded demo set, scikit-learn)", 0))
register_dataset("cifar10", DatasetSpec(
    lambda root, size, download: load_cifar("cifar10", data_dir(root), download),
    "CIFAR-10 (as found in the data directory; label accuracies on the JPEG copy as \"CIFAR-10 (JPEG copy)\")", 16))
register_dataset("cifar100", DatasetSpec(lambda root, size, download: load_cifar("cifar100", data_dir(root), download),
                                         "CIFAR-100", 8))
register_dataset("folder", DatasetSpec(_folder, "an image folder (data.root)", 16, needs_root=True))


def load_dataset(name: str, root: str | None = None, image_size: int = 32, download: bool = True) -> Dataset:
    """The registered dataset ``name``; ``root`` is its folder (``needs_root``) or the data directory."""
    return dataset_spec(name).load(root, image_size, download)


def reduced_split(ds: Dataset, n_train: int, n_val: int, seed: int, pool: str = "training images") -> Dataset:
    """The search's split: ``n_train`` training and ``n_val`` validation images from the training set (``pool``
    says what that set is, for the one-line error when they do not fit)."""
    train_idx, val_idx = balanced_split(ds.train.labels, n_train, n_val, seed, pool=pool)
    return Dataset(f"{ds.name}-reduced", ds.train.subset(train_idx), ds.train.subset(val_idx), ds.num_classes, ds.classes)


__all__ = [
    "DataError", "Dataset", "DatasetSpec", "ImageSet", "Normalizer", "SplitError", "balanced_split", "batch_indices",
    "available_datasets", "channel_stats", "data_dir", "dataset_spec", "hold_out", "load_cifar", "load_dataset", "load_digits_dataset", "load_folder",
    "reduced_split", "register_dataset", "steps_per_epoch",
]
