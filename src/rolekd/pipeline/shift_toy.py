"""HARD's motivating toy (``pipeline.experiment: shift_equivariance``): plain KD does not transfer a
CNN teacher's shift robustness to an MLP student; does KD on HARD's learned translations?

The data: the configured dataset (the digits) with every image shrunk inside a black margin of R px
(R = ``agents.hard.max_translation`` x side, rounded), so no shift of up to R px cuts a digit, and
pixels scaled to [0, 1] without centring, so every "mean" fill is the black background.

One teacher (trained once on centred images) and, per seed in ``pipeline.seeds``, three students
distilled from it on centred images, differing only in the augmentation:

- ``kd``: none;
- ``kd_hard``: the HARD agent in translation-only mode, up to R px (soft labels only);
- ``kd_random``: random integer translations in [-R, R]^2 px (the baseline random crop with that
  padding, which is exactly this), supervised by labels and KD.

All are evaluated on the centred test set and on one shifted copy of it: every test image moved by an
integer offset drawn uniformly from [-R, R] per axis, drawn once with the fixed seed
:data:`TEST_SHIFT_SEED`. HARD's abstract only mentions "a simple toy example"; the CNN teacher -> MLP
student setting follows the authors' predecessor study (Nix et al., AISTATS 2022). The data layout,
sizes, budgets and the shift range are rolekd's choices.
"""

from __future__ import annotations

import statistics
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ContextManager

import torch
import torch.nn.functional as F
from torch import nn

from ..augment.baseline import random_crop
from ..config import ExperimentConfig, dump_config
from ..data import Dataset, ImageSet, Normalizer
from ..quant import load_network
from ..training import atomic_write_json, atomic_write_text, evaluate_model
from .folders import lock_folder, releases_claims, seed_folder
from .setup import Prepared
from .stages import load_teacher, train_network

TEST_SHIFT_SEED = 2023
ProgressFactory = Callable[[str, int], ContextManager[Callable | None]]


@dataclass(frozen=True)
class ToyRow:
    key: str
    label: str
    hard: bool = False
    random_shift: bool = False


ROWS = (
    ToyRow("kd", "Student + KD"),
    ToyRow("kd_hard", "Student + KD + HARD (learned translations)", hard=True),
    ToyRow("kd_random", "Student + KD + random translations", random_shift=True),
)


def shift_range(cfg: ExperimentConfig, image_size: int) -> int:
    """R in pixels: the agents' translation range at this image size."""
    return round(cfg.agents.hard.max_translation * image_size)


def with_margin(images: torch.Tensor, margin: int) -> torch.Tensor:
    """Each image shrunk by ``2 * margin`` px and centred on black (the digits' background): MNIST's
    layout (20x20 digits in a 28x28 frame), so that no shift of up to ``margin`` px cuts a digit off."""
    n, c, h, w = images.shape
    inner = F.interpolate(images.float(), size=(h - 2 * margin, w - 2 * margin), mode="bilinear", antialias=True)
    return F.pad(inner, (margin,) * 4).round().clamp(0, 255).to(torch.uint8)


def toy_data(prep: Prepared, margin: int) -> Prepared:
    """The dataset with :func:`with_margin` applied, scaled to [0, 1] without centring.

    Without centring (as the predecessor's MNIST setup), the "dataset mean" fill of every shift -- the
    baseline crop, HARD's ``grid_sample`` zeros and the shifted test set -- is the black background,
    so each of them is a pure translation rather than one that drags a grey band into the frame.
    """
    full = prep.full
    train = ImageSet(with_margin(full.train.images, margin), full.train.labels)
    test = ImageSet(with_margin(full.test.images, margin), full.test.labels)
    data = Dataset(f"{full.name}-margin{margin}", train, test, full.num_classes, full.classes)
    channels = full.image_shape[0]
    return Prepared(data, Normalizer((0.0,) * channels, (1.0,) * channels), prep.device)


def shifted(test: ImageSet, max_shift: int, fill: tuple[int, ...], seed: int = TEST_SHIFT_SEED) -> ImageSet:
    """The test set with every image moved by a uniform integer offset in [-max_shift, max_shift]^2."""
    gen = torch.Generator(device=test.device).manual_seed(seed)
    return ImageSet(random_crop(test.images, max_shift, gen, fill), test.labels)


def check_toy_config(cfg: ExperimentConfig) -> None:
    """The toy's premises, as one-line errors: centred training data, translation-only HARD, KD on."""
    d = cfg.data
    if d.crop_padding or d.flip or d.cutout:
        raise ValueError(
            "shift_equivariance: expected data.crop_padding: 0, flip: false, cutout: 0 (training on centred images)"
        )
    if cfg.agents.hard.mode != "translation":
        raise ValueError("shift_equivariance: expected agents.hard.mode: translation")
    from ..kd import distills

    if not distills(cfg.distill.method):
        raise ValueError("shift_equivariance: expected a KD method in distill.method (e.g. soft), got 'none'")


def row_crop_padding(row: ToyRow, max_shift: int, image_size: int) -> int:
    """The crop padding one row trains with: for random shifts, the padding giving ``max_shift``, else none."""
    padding = 0
    if row.random_shift:
        padding = round(max_shift * 32 / image_size)  # BaselineAugmenter's padding is given at 32x32
        if round(padding * image_size / 32) != max_shift:
            raise ValueError(
                f"shift_equivariance: a {max_shift}-pixel shift cannot be expressed as crop padding at {image_size}px"
            )
    return padding


def _load_student(path: Path, prep: Prepared) -> nn.Module:
    return load_network(path, device=prep.device).model.eval()


def _accuracies(model: nn.Module, prep: Prepared, test_sets: dict[str, ImageSet], batch_size: int) -> dict[str, float]:
    return {name: evaluate_model(model, data, prep.normalizer, batch_size)["acc"] for name, data in test_sets.items()}


@releases_claims
def run_shift_toy(
    cfg: ExperimentConfig,
    prep: Prepared,
    out_dir: str | Path,
    resume: bool = False,
    callback_factory: ProgressFactory | None = None,
) -> dict[str, Any]:
    """Train the teacher and the three students per seed, evaluate them, write ``results.json`` and
    ``report.md`` in ``out_dir``; returns the results (``rows``: per model and seed, ``table``: markdown)."""
    check_toy_config(cfg)
    out = lock_folder(out_dir)  # one process per folder
    atomic_write_text(out / "config.yaml", dump_config(cfg))
    progress = callback_factory or (lambda label, epochs: nullcontext(None))
    size = prep.full.image_shape[-1]
    max_shift = shift_range(cfg, size)
    prep = toy_data(prep, max_shift)
    test_sets = {"centred": prep.full.test, "shifted": shifted(prep.full.test, max_shift, prep.normalizer.fill)}
    bs = cfg.data.eval_batch_size

    with progress("teacher", cfg.teacher.train.epochs) as cb:
        train_network(cfg, prep, "teacher", out / "teacher", resume=resume, callback=cb)
    teacher = load_teacher(out / "teacher" / "last.pt", cfg, prep)
    rows: list[dict[str, Any]] = [{
        "key": "teacher", "label": f"Teacher ({cfg.teacher.model})", "seeds": [cfg.seed],
        "acc": {k: [v] for k, v in _accuracies(teacher.model, prep, test_sets, bs).items()},
    }]
    for row in ROWS:
        padding = row_crop_padding(row, max_shift, size)
        acc: dict[str, list[float]] = {name: [] for name in test_sets}
        for seed in cfg.pipeline.seeds:
            folder = seed_folder(out / row.key, seed)
            with progress(f"{row.key} (seed {seed})", cfg.student.train.epochs) as cb:
                train_network(cfg, prep, "student", folder, teacher=teacher, agents=["hard"] if row.hard else [],
                              crop_padding=padding, resume=resume, callback=cb, seed=seed)
            for name, value in _accuracies(_load_student(folder / "last.pt", prep), prep, test_sets, bs).items():
                acc[name].append(value)
        label = f"{row.label} ({cfg.student.model})"
        rows.append({"key": row.key, "label": label, "seeds": list(cfg.pipeline.seeds), "acc": acc})

    results = {
        "experiment": "shift_equivariance", "name": cfg.name, "dataset": prep.full.name, "image_size": size,
        "shift_px": max_shift, "test_shift_seed": TEST_SHIFT_SEED, "rows": rows,
    }
    results["table"] = markdown_table(results)
    atomic_write_json(out / "results.json", results)
    atomic_write_text(out / "report.md", report(results))
    return results


def _cell(values: list[float]) -> str:
    mean = 100 * statistics.fmean(values)
    return f"{mean:.1f}" if len(values) == 1 else f"{mean:.1f} ± {100 * statistics.stdev(values):.1f}"


def markdown_table(results: dict[str, Any]) -> str:
    r = results["shift_px"]
    lines = [
        f"| model | centred test acc (%) | shifted test acc (%), ±{r} px | seeds |",
        "|---|---:|---:|---|",
    ]
    for row in results["rows"]:
        seeds = ", ".join(str(s) for s in row["seeds"])
        lines.append(f"| {row['label']} | {_cell(row['acc']['centred'])} | {_cell(row['acc']['shifted'])} | {seeds} |")
    return "\n".join(lines)


def report(results: dict[str, Any]) -> str:
    r, size = results["shift_px"], results["image_size"]
    return (
        f"# Shift equivariance toy: {results['name']}\n\n"
        f"Teacher and students trained on centred {results['dataset']} images ({size}x{size}, each digit inside a "
        f"black margin of {r} px); the shifted test set moves every test image by a uniform integer offset in "
        f"[-{r}, {r}] px per axis (black fill, seed {results['test_shift_seed']}). HARD learns translations of up to "
        f"±{r} px and its samples carry the teacher's soft labels only; the random row draws integer translations "
        f"of the same range, supervised by labels and KD. Mean ± std over seeds where there are several.\n\n"
        f"{results['table']}\n"
    )
