"""Shared fixtures: small generated datasets in the real on-disk formats (never a download)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

torch.set_num_threads(2)


def write_cifar(root: Path, name: str = "cifar10", n_train: int = 100, n_test: int = 40, seed: int = 0) -> Path:
    """Write a tiny CIFAR-10/100 in the standard python-format layout under ``root``."""
    rng = np.random.default_rng(seed)
    classes = 10 if name == "cifar10" else 100
    folder = root / ("cifar-10-batches-py" if name == "cifar10" else "cifar-100-python")
    folder.mkdir(parents=True, exist_ok=True)
    key = "labels" if name == "cifar10" else "fine_labels"

    def batch(n: int) -> dict:
        labels = [int(v) for v in np.arange(n) % classes]
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        return {"batch_label": "generated", key: labels, "data": data, "filenames": [f"{i}.png" for i in range(n)]}

    files = [f"data_batch_{i}" for i in range(1, 6)] if name == "cifar10" else ["train"]
    for f in files:
        with open(folder / f, "wb") as fh:
            pickle.dump(batch(n_train // len(files)), fh, protocol=2)
    with open(folder / ("test_batch" if name == "cifar10" else "test"), "wb") as fh:
        pickle.dump(batch(n_test), fh, protocol=2)
    meta_name, meta_key = ("batches.meta", "label_names") if name == "cifar10" else ("meta", "fine_label_names")
    with open(folder / meta_name, "wb") as fh:
        pickle.dump({meta_key: [f"class{i}" for i in range(classes)]}, fh, protocol=2)
    return folder


@pytest.fixture
def cifar_dir(tmp_path: Path) -> Path:
    write_cifar(tmp_path, "cifar10")
    return tmp_path
