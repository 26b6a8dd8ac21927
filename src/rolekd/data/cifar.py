"""CIFAR-10/100 from the standard "python version" folders, checked for structure, not checksums.

The batch files are pickles; they are read with a restricted unpickler that admits only the
numpy array reconstruction the format needs, so a tampered file cannot run code. Files on disk
are checked for keys, shapes, dtype and label range (not the official md5: re-encoded copies such
as the JPEG CIFAR-10 in shared/data must load). Missing files are downloaded with torchvision's
checksum-verifying helper; offline, the error says where to put them.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .tensors import Dataset, ImageSet


class DataError(ValueError):
    """A dataset is missing or malformed; the message names the file and what was expected."""


@dataclass(frozen=True)
class _Spec:
    folder: str
    url: str
    md5: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    label_key: str
    num_classes: int
    meta_file: str
    names_key: str


SPECS = {
    "cifar10": _Spec(
        "cifar-10-batches-py",
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "c58f30108f718f92721af3b95e74349a",
        tuple(f"data_batch_{i}" for i in range(1, 6)),
        ("test_batch",),
        "labels",
        10,
        "batches.meta",
        "label_names",
    ),
    "cifar100": _Spec(
        "cifar-100-python",
        "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        "eb9058c3a382ffc7106e4002c42a8d85",
        ("train",),
        ("test",),
        "fine_labels",
        100,
        "meta",
        "fine_label_names",
    ),
}

_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: not part of the CIFAR format")


def _read_pickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            obj = _RestrictedUnpickler(f, encoding="latin1").load()
    except FileNotFoundError:
        raise
    except Exception as exc:  # truncated or corrupt files raise many different errors
        raise DataError(f"{path}: not a readable CIFAR batch file ({type(exc).__name__}: {exc})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a pickled dict, found {type(obj).__name__}")
    return obj


def _read_batch(path: Path, spec: _Spec) -> tuple[np.ndarray, np.ndarray]:
    obj = _read_pickle(path)
    for key in ("data", spec.label_key):
        if key not in obj:
            raise DataError(f"{path}: missing key {key!r}; expected keys 'data' and {spec.label_key!r}")
    data = obj["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        shape = getattr(data, "shape", None)
        raise DataError(f"{path}: 'data' must be a uint8 array of shape (N, 3072), got {getattr(data, 'dtype', type(data).__name__)} {shape}")
    labels = np.asarray(obj[spec.label_key])
    if labels.shape != (data.shape[0],):
        raise DataError(f"{path}: {len(labels)} labels for {data.shape[0]} images")
    if labels.size and (labels.min() < 0 or labels.max() >= spec.num_classes):
        raise DataError(f"{path}: labels outside 0..{spec.num_classes - 1} (found {labels.min()}..{labels.max()})")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def _ensure_present(root: Path, spec: _Spec, download: bool) -> Path:
    folder = root / spec.folder
    needed = [folder / f for f in spec.train_files + spec.test_files]
    missing = [p.name for p in needed if not p.is_file()]
    if not missing:
        return folder
    incomplete = f"{folder} is missing {', '.join(missing)}" if folder.is_dir() else None
    if not download:
        raise DataError(f"{incomplete or f'{folder} does not exist'}; expected the standard python-format files there")
    from torchvision.datasets.utils import download_and_extract_archive

    print(f"rolekd: downloading {spec.url} to {root} (checksum verified)")
    try:
        download_and_extract_archive(spec.url, str(root), md5=spec.md5)
    except Exception as exc:
        raise DataError(
            (f"{incomplete}; " if incomplete else "")
            + f"could not download {spec.url} ({type(exc).__name__}); put the extracted '{spec.folder}/' folder "
            f"in {root} (or pass --data-dir / set ROLEKD_DATA)"
        ) from None
    return folder


def load_cifar(name: str, root: str | Path, download: bool = True) -> Dataset:
    spec = SPECS[name]
    folder = _ensure_present(Path(root).expanduser(), spec, download)

    def read(files: tuple[str, ...]) -> ImageSet:
        parts = [_read_batch(folder / f, spec) for f in files]
        x = np.concatenate([p[0] for p in parts])
        y = np.concatenate([p[1] for p in parts])
        return ImageSet(torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y))

    classes = [str(i) for i in range(spec.num_classes)]
    meta_path = folder / spec.meta_file
    if meta_path.is_file():
        meta = _read_pickle(meta_path)
        names = meta.get(spec.names_key)
        if isinstance(names, list) and len(names) == spec.num_classes:
            classes = [str(n) for n in names]
    return Dataset(name, read(spec.train_files), read(spec.test_files), spec.num_classes, classes)


def write_synthetic_cifar(root: Path, name: str = "cifar10", n_train: int = 100, n_test: int = 40, seed: int = 0) -> Path:
    """Write random images as a CIFAR-10/100 in the standard python-format layout under ``root`` (labels cycle
    through the classes): for tests and speed benchmarks, where content does not matter. Returns the folder."""
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
