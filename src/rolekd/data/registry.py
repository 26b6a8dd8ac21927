"""Dataset name -> how to load it, what to call it in a report, and the cutout PBA/role-kd used after a
searched schedule. A user's own dataset joins with :func:`register_dataset` (e.g. from an ``--import`` module)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..registry import Registry
from .tensors import Dataset


@dataclass(frozen=True)
class DatasetSpec:
    """``load(root, image_size, download)``: ``root`` is ``data.root`` when ``needs_root`` (the images
    themselves, as for a folder dataset), otherwise the data directory (``--data-dir``)."""

    load: Callable[[str | None, int, bool], Dataset]
    title: str
    schedule_cutout: int  # px at 32x32 after a searched policy (PBA's CIFAR-10: 16, role-kd's CIFAR-100: 8)
    needs_root: bool = False


DATASETS: Registry[DatasetSpec] = Registry("dataset")


def register_dataset(name: str, spec: DatasetSpec) -> DatasetSpec:
    return DATASETS.add(name, spec)


def dataset_spec(name: str, field: str | None = "data.dataset") -> DatasetSpec:
    return DATASETS.get(name, field)


def available_datasets() -> list[str]:
    return DATASETS.names()
