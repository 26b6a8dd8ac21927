"""Figures: a schedule over epochs (PBA paper, Fig. 3) and a before/after grid of a policy.

Matplotlib is used through ``Figure`` + the Agg canvas only, so importing this module never
changes pyplot's global backend.

Fig. 3 convention (documented here because the paper leaves it implicit): for each op, its two
entries are averaged (probability in 0..1, magnitude in 0..9); each panel is a stacked area chart
whose values are divided by the largest per-epoch sum over the 15 ops, so the stack reaches 1 at
the epoch where the schedule is strongest and the growth of the schedule over time stays visible.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from .ops import MAX_LEVEL, OP_NAMES, apply_op
from .policy import PBA_ORDER, Policy, PolicyError, apply_policy, policy_from_json
from ..atomic import atomic_path
from .schedule import Schedule, ScheduleError

__all__ = ["schedule_curves", "plot_schedules", "preview_grid", "plot_command", "preview_command"]

PREVIEW_COLUMNS = 8


def schedule_curves(schedule: Schedule) -> tuple[np.ndarray, np.ndarray]:
    """Normalised ``(probability, magnitude)`` arrays of shape ``(epochs, 15)``, ops in ``OP_NAMES`` order.

    Per op the two entries are averaged; each array is divided by its largest per-epoch sum
    over ops (left as zeros when the schedule never has a non-zero value).
    """
    probs = np.zeros((schedule.epochs, len(OP_NAMES)))
    mags = np.zeros_like(probs)
    epoch = 0
    for n, policy in schedule.segments:
        stats = policy.op_stats()
        row_p = [stats[op][0] for op in OP_NAMES]
        row_m = [stats[op][1] for op in OP_NAMES]
        probs[epoch : epoch + n] = row_p
        mags[epoch : epoch + n] = row_m
        epoch += n
    for arr in (probs, mags):
        peak = arr.sum(1).max()
        if peak > 0:
            arr /= peak
    return probs, mags


def _colours() -> list:
    cmap = colormaps["tab20"]
    return [cmap(i) for i in range(len(OP_NAMES))]


def _atomic_savefig(fig: Figure, path: Path, **kwargs) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", **kwargs)
    return Path(path)


def plot_schedules(schedules: Mapping[str, Schedule], path: str | Path) -> Path:
    """PBA Fig. 3 for one or more schedules (one column each, e.g. teacher and student).

    Top row: normalised probability of each op over epochs; bottom row: normalised magnitude.
    """
    if not schedules:
        raise ValueError("plot_schedules needs at least one schedule")
    cols = len(schedules)
    fig = Figure(figsize=(5.2 * cols + 2.2, 7.0), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, cols, squeeze=False, sharey="row")
    colours = _colours()
    for j, (label, schedule) in enumerate(schedules.items()):
        probs, mags = schedule_curves(schedule)
        epochs = np.arange(schedule.epochs + 1)
        for i, (arr, what) in enumerate(((probs, "probability"), (mags, "magnitude"))):
            ax = axes[i][j]
            # Step-wise (an epoch's policy holds for the whole epoch): repeat the last row.
            data = np.vstack([arr, arr[-1:]]).T
            ax.stackplot(epochs, data, colors=colours, step="post", linewidth=0)
            ax.set_xlim(0, schedule.epochs)
            ax.set_ylim(0, 1.02)
            ax.set_xlabel("epoch")
            ax.set_ylabel(f"normalised {what}")
            ax.set_title(f"{label}: {what}")
            ax.grid(alpha=0.3, linewidth=0.5)
    handles = [Patch(color=c, label=op) for op, c in zip(OP_NAMES, colours)]
    fig.legend(handles=handles, loc="outside right center", fontsize=8, frameon=False)
    return _atomic_savefig(fig, Path(path), dpi=120)


def _to_hwc(images: torch.Tensor) -> np.ndarray:
    x = images.detach().to("cpu")
    if x.dtype != torch.uint8:
        raise ValueError(f"preview_grid expects uint8 images, got {x.dtype}")
    x = x.permute(0, 2, 3, 1).numpy()
    return np.repeat(x, 3, axis=3) if x.shape[3] == 1 else x


def preview_grid(
    before: torch.Tensor,
    after: torch.Tensor,
    path: str | Path,
    titles: Sequence[str] | None = None,
    suptitle: str | None = None,
) -> Path:
    """PNG grid: each original (uint8 ``(N, C, H, W)``) directly above its augmented version.

    ``titles`` (one per image) label the augmented images, e.g. the ops that fired. The tiles
    are assembled into one mosaic drawn in a single axes (fast for large grids).
    """
    if before.shape != after.shape:
        raise ValueError(f"before {tuple(before.shape)} and after {tuple(after.shape)} differ")
    n = before.shape[0]
    if n == 0:
        raise ValueError("preview_grid needs at least one image")
    if titles is not None and len(titles) != n:
        raise ValueError(f"{len(titles)} titles for {n} images")
    a, b = _to_hwc(before), _to_hwc(after)
    h, w = a.shape[1:3]
    cols = min(PREVIEW_COLUMNS, n)
    bands = math.ceil(n / cols)
    gap, label = max(2, h // 16), max(8, h // 3)  # pixels between tiles / above "after" tiles
    cell_w, band_h = w + gap, 2 * h + gap + label + gap
    mosaic = np.full((bands * band_h + gap, cols * cell_w + gap, 3), 255, dtype=np.uint8)
    spots = []
    for i in range(n):
        y, x = (i // cols) * band_h + gap, (i % cols) * cell_w + gap
        mosaic[y : y + h, x : x + w] = a[i]
        mosaic[y + h + label : y + 2 * h + label, x : x + w] = b[i]
        spots.append((x + w / 2, y + h + label - 1))
    scale = max(1.0, 96 / max(h, w))  # small images get more pixels per image pixel
    fig = Figure(figsize=(mosaic.shape[1] * scale / 100, mosaic.shape[0] * scale / 100 + (0.3 if suptitle else 0)))
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1 if not suptitle else mosaic.shape[0] / (mosaic.shape[0] + 30 / scale)))
    ax.imshow(mosaic, interpolation="nearest")
    ax.set_axis_off()
    for i, (x, y) in enumerate(spots):
        ax.text(x, y, titles[i] if titles else "after", ha="center", va="bottom", fontsize=6, clip_on=True)
    if suptitle:
        fig.suptitle(suptitle, fontsize=8, y=0.995, va="top")
    return _atomic_savefig(fig, Path(path), dpi=100)


# ----------------------------------------------------------------------------------------------
# CLI entry points (wired by rolekd.cli)
# ----------------------------------------------------------------------------------------------


def _labels(paths: Sequence[Path]) -> list[str]:
    stems = [p.stem for p in paths]
    if len(set(stems)) == len(stems):
        return stems
    return [f"{p.parent.name}/{p.stem}" if p.parent.name else str(p) for p in paths]


def plot_command(schedule_paths: list[str], out: str | None) -> str:
    """``rolekd plot SCHEDULE.json [SCHEDULE2.json] [-o FILE.png]``: Fig. 3, side by side for two.

    Default output: next to the first schedule, ``<stem>.png`` or ``<stem1>_vs_<stem2>.png``.
    Returns the path written.
    """
    if not 1 <= len(schedule_paths) <= 2:
        raise ValueError(f"plot takes one or two schedules (teacher, student), got {len(schedule_paths)}")
    paths = [Path(p) for p in schedule_paths]
    schedules = {label: Schedule.load(p) for label, p in zip(_labels(paths), paths)}
    if out is None:
        name = "_vs_".join(p.stem for p in paths) + ".png"
        out = str(paths[0].with_name(name))
    return str(plot_schedules(schedules, out))


def _load_policy_or_schedule(path: str) -> Policy:
    """A policy file, a bare entry list / PBA 60-int list, or a schedule (its last epoch's policy)."""
    try:
        obj = json.loads(Path(path).read_text())
    except OSError as exc:
        raise ValueError(f"{path}: cannot read: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: invalid JSON at line {exc.lineno}: {exc.msg}") from None
    try:
        if isinstance(obj, dict) and obj.get("format") == "rolekd.schedule":
            return Schedule.from_dict(obj).policies[-1]
        return policy_from_json(obj)
    except (PolicyError, ScheduleError) as exc:
        raise ValueError(f"{path}: {exc}") from None


def _describe(ops: torch.Tensor, levels: torch.Tensor) -> list[str]:
    out = []
    for row_ops, row_levels in zip(ops.tolist(), levels.tolist()):
        names = [f"{OP_NAMES[o]} {lv}" for o, lv in zip(row_ops, row_levels) if o >= 0]
        out.append("\n".join(names) if names else "(no op)")
    return out


def preview_command(
    policy_or_schedule_path: str | None,
    op: str | None,
    mag: int,
    images: torch.Tensor,
    out: str,
    seed: int,
) -> str:
    """``rolekd augment-preview``: a before/after PNG grid of ``images`` (uint8 ``(N, C, H, W)``).

    With ``op``: that op alone at magnitude ``mag`` on every image (probability 10, count
    forced to 1 so every tile shows it). Otherwise the policy from the file (a schedule file
    gives its last epoch's policy) or, without a file, a random policy, applied as in training.
    Fill = the per-channel mean of ``images``. Returns the path written.
    """
    images = images.to("cpu")
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise ValueError(f"expected uint8 images (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
    gen = torch.Generator().manual_seed(seed)
    fill = tuple(int(v) for v in images.float().mean(dim=(0, 2, 3)).round().tolist())
    if op is not None:
        if op not in OP_NAMES:
            raise ValueError(f"unknown op {op!r}; expected one of {', '.join(PBA_ORDER)}")
        if not 0 <= mag <= MAX_LEVEL:  # the ops take PBA's 0..10, but schedules and the search use 0..9
            raise ValueError(f"--mag {mag}: expected a magnitude in 0..{MAX_LEVEL}, the levels a schedule uses")
        after = apply_op(op, images, mag, fill=fill, generator=gen)
        titles = [f"{op} {mag}"] * images.shape[0]
        header = f"{op}, magnitude {mag}"
    else:
        if policy_or_schedule_path:
            policy = _load_policy_or_schedule(policy_or_schedule_path)
            header = f"policy from {Path(policy_or_schedule_path).name} (sum p = {policy.prob_sum:.1f})"
        else:
            policy = Policy.random(torch.Generator().manual_seed(seed))
            header = f"random policy, seed {seed} (sum p = {policy.prob_sum:.1f})"
        after, plan = apply_policy(images, policy, gen, fill, return_plan=True)
        titles = _describe(plan.ops, plan.levels)
    return str(preview_grid(images, after, out, titles=titles, suptitle=header))
