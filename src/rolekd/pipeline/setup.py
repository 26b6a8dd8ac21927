"""What every stage needs before training: the device, the data on it, and its normaliser."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import ExperimentConfig
from ..data import Dataset, Normalizer, balanced_split, channel_stats, dataset_spec, load_dataset, reduced_split


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
