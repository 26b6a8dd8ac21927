"""Shared fixtures: small generated datasets in the real on-disk formats (never a download)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rolekd.data.cifar import write_synthetic_cifar as write_cifar  # noqa: F401  (tests import it from here)

torch.set_num_threads(2)


@pytest.fixture
def cifar_dir(tmp_path: Path) -> Path:
    write_cifar(tmp_path, "cifar10")
    return tmp_path
