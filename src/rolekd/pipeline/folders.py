"""The output folder of every command (`rolekd run`, `train`, `distill`, `search`): it belongs to one config.

``config.yaml`` is written when the folder is claimed; ``--resume`` compares against it, so a run is never
continued with another lr or another data subset without a word.
"""

from __future__ import annotations

from pathlib import Path

from ..atomic import atomic_write_text, make_dirs
from ..config import ConfigError, ExperimentConfig, dump_config, require_same_config

CONFIG_FILE = "config.yaml"


class OutputFolderError(ValueError):
    """The output folder holds another run: one line saying how to continue it or where to go instead."""


def claim_folder(cfg: ExperimentConfig, out: str | Path, resume: bool, progress: str) -> Path:
    """Make ``out`` and record ``cfg`` in it. Once it holds progress (``progress``, e.g. ``last.pt``), only
    ``resume`` with the same config may continue it; before that (a run that failed early) it is claimed anew."""
    out = make_dirs(out, "--out")
    saved = out / CONFIG_FILE
    if (out / progress).exists():
        if not resume:
            raise OutputFolderError(f"{out} already holds a run ({progress}); pass --resume to continue it or choose "
                                    "another --out")
        if saved.is_file():
            try:
                require_same_config(saved, cfg, out)
            except ConfigError as exc:
                raise OutputFolderError(str(exc)) from None
            return out
    atomic_write_text(saved, dump_config(cfg))  # a new folder, or one made before folders recorded their config
    return out


def seed_folder(folder: str | Path, seed: int) -> Path:
    """Where one seed of a row trains inside a run folder (``<row folder>/seed<N>``), for every run layout."""
    return Path(folder) / f"seed{seed}"


TEACHER_FILE = "teacher.json"


def claim_teacher(out: Path, teacher_path: str | Path, progress: str) -> None:
    """A folder distilled from a teacher belongs to that teacher too: the file's SHA-256 is kept beside
    ``config.yaml``, and continuing the folder (``progress`` exists) from another teacher file is refused."""
    import hashlib
    import json

    digest = hashlib.sha256(Path(teacher_path).read_bytes()).hexdigest()
    record = out / TEACHER_FILE
    if (out / progress).exists() and record.is_file():
        saved = json.loads(record.read_text())
        if saved.get("sha256") != digest:
            raise OutputFolderError(
                f"--resume: {out} was distilled from the teacher {saved.get('path')} (sha256 {saved.get('sha256', '')[:12]}), "
                f"not from --teacher {teacher_path} (sha256 {digest[:12]}); pass that teacher or choose another --out")
        return
    atomic_write_text(record, json.dumps({"path": str(Path(teacher_path).resolve()), "sha256": digest}) + "\n")
