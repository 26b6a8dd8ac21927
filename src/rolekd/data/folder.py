"""A user's own images: ``root/<class>/*.png|jpg``, or ``root/train/<class>`` and ``root/test/<class>``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .cifar import DataError
from .splits import balanced_split
from .tensors import Dataset, ImageSet

EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}
TEST_FRACTION = 0.2


def _class_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _read_tree(root: Path, classes: list[str], size: int) -> ImageSet:
    from PIL import Image, UnidentifiedImageError

    images, labels = [], []
    for label, name in enumerate(classes):
        files = sorted(p for p in (root / name).iterdir() if p.suffix.lower() in EXTENSIONS)
        if not files:
            raise DataError(f"{root / name}: class folder {name!r} holds no images; expected at least one "
                            f"{'|'.join(sorted(e[1:] for e in EXTENSIONS))} file, or remove the folder")
        for path in files:
            try:
                with Image.open(path) as im:
                    arr = np.asarray(im.convert("RGB").resize((size, size), Image.BILINEAR))
            except (UnidentifiedImageError, OSError) as exc:
                raise DataError(f"{path}: not a readable image ({exc})") from None
            images.append(arr)
            labels.append(label)
    if not images:
        raise DataError(f"{root}: no images found; expected <class>/*.png|jpg under it")
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    return ImageSet(x, torch.tensor(labels))


def _test_size(root: Path, full: ImageSet, classes: list[str]) -> int:
    """Images held out for testing (TEST_FRACTION of the smallest class, from each class); none is refused, since
    training would then report no test accuracy at all."""
    counts = torch.bincount(full.labels, minlength=len(classes))
    smallest = int(counts.argmin())
    per_class = int(counts[smallest].item() * TEST_FRACTION)
    if per_class == 0:
        need = int(1 / TEST_FRACTION + 0.5)
        raise DataError(
            f"{root}: class {classes[smallest]!r} has {int(counts[smallest])} image(s), too few to hold out "
            f"{TEST_FRACTION:.0%} as test images; expected at least {need} per class, or separate "
            "root/train/<class> and root/test/<class> folders"
        )
    return per_class * len(classes)


def load_folder(root: str | Path, size: int = 32) -> Dataset:
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"data.root {str(root)!r} is not a folder; expected root/<class>/*.png|jpg")
    if (root / "train").is_dir() and (root / "test").is_dir():
        classes = [p.name for p in _class_dirs(root / "train")]
        test_classes = [p.name for p in _class_dirs(root / "test")]
        if test_classes != classes:
            raise DataError(f"{root}: train/ and test/ hold different class folders ({classes} vs {test_classes})")
        train, test = _read_tree(root / "train", classes, size), _read_tree(root / "test", classes, size)
    else:
        classes = [p.name for p in _class_dirs(root)]
        if len(classes) < 2:
            raise DataError(f"{root}: found {len(classes)} class folder(s); expected at least 2 <class>/ subfolders")
        full = _read_tree(root, classes, size)
        n_test = _test_size(root, full, classes)
        test_idx, _ = balanced_split(full.labels, n_test, 0, seed=0)
        is_test = torch.zeros(len(full), dtype=torch.bool)
        is_test[test_idx] = True
        train, test = full.subset(torch.nonzero(~is_test).flatten()), full.subset(test_idx)
    return Dataset(root.name, train, test, len(classes), classes)
