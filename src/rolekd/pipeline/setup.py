"""What every stage needs before training: the device, the data on it, and its normaliser."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..config import ExperimentConfig
from ..data import Dataset, ImageSet, Normalizer, balanced_split, channel_stats, dataset_spec, load_dataset, reduced_split


@dataclass
class Prepared:
    full: Dataset  # train/test on the device
    normalizer: Normalizer
    device: torch.device

    def reduced(self, cfg: ExperimentConfig) -> Dataset:
        """The search split (reduced train / validation), carved from the full training set."""
        d = cfg.data
        return reduced_split(self.full, d.reduced_train, d.reduced_val, d.split_seed)


def _train_subset(ds: Dataset, n: int, seed: int) -> Dataset:
    if n > len(ds.train):
        raise ValueError(f"data.train_subset = {n} is larger than the {len(ds.train)} training images of {ds.name}; "
                         f"expected at most {len(ds.train)}")
    idx, _ = balanced_split(ds.train.labels, n, 0, seed)
    return Dataset(ds.name, ds.train.subset(idx), ds.test, ds.num_classes, ds.classes)


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: 'cuda' was requested but no CUDA device is available; use device: auto or cpu")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def prepare(cfg: ExperimentConfig, data_dir: str | None = None, device: torch.device | None = None) -> Prepared:
    """Load the configured dataset once and move it to the training device.

    Normalisation statistics come from the full training set, so the teacher and every student
    (and every search trial on the reduced split) see identically normalised inputs.
    """
    d = cfg.data
    root = d.root if dataset_spec(d.dataset).needs_root else data_dir
    ds = load_dataset(d.dataset, root, d.image_size)
    if d.train_subset is not None:
        ds = _train_subset(ds, d.train_subset, d.split_seed)
    normalizer = Normalizer(*channel_stats(ds.train.images))
    dev = device or resolve_device(cfg.device)
    ds = Dataset(ds.name, ds.train.to(dev), ds.test.to(dev), ds.num_classes, ds.classes)
    return Prepared(ds, normalizer, dev)


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
