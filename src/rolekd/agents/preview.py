"""What an agent generates, as a PNG: each original above its generated sample, titled with the label
and the teacher's and student's predicted classes (a glance shows where the two disagree)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Protocol, Sequence

import torch
from torch import Tensor

from ..atomic import atomic_path
from ..augment.base import AugmentContext, Batch
from .backward import eval_mode, teacher_and_student

COLUMNS = 8


class GeneratingAgent(Protocol):
    def generate(self, x: Tensor, ctx: AugmentContext) -> Tensor: ...


def restore_from_checkpoint(agent: Any, checkpoint: Mapping[str, Any]) -> bool:
    """Load a learned agent's state (HARD's augmentor and optimiser) from a Trainer checkpoint
    (``last.pt``: the Trainer saves each augmenter's ``state_dict`` under ``"augmenters"``).

    Returns False when the agent has no state or the checkpoint holds none of its kind (e.g. a
    ``best.pt``, which keeps the model only)."""
    get = getattr(agent, "state_dict", None)
    if get is None:
        return False
    keys = set(get())
    for state in checkpoint.get("augmenters") or []:
        if state and set(state) == keys:
            agent.load_state_dict(state)
            return True
    return False


@torch.no_grad()
def _predict(model: torch.nn.Module, x: Tensor) -> Tensor:
    return model(x).argmax(1).cpu()


def _to_rgb(ctx: AugmentContext, x: Tensor) -> Tensor:
    """Normalised input -> float ``(N, H, W, C)`` in [0, 1] for imshow."""
    return (ctx.normalize.denormalize(x.float()) / 255).clamp(0, 1).permute(0, 2, 3, 1).cpu()  # (N, H, W, C)


def agent_preview(
    agent: GeneratingAgent,
    batch_uint8: Batch,
    ctx: AugmentContext,
    path: str | Path,
    classes: Sequence[str] | None = None,
) -> Path:
    """Write ``path`` (PNG): rows of originals and, below each, the agent's sample generated from it.

    ``batch_uint8`` holds pixel-space images on the models' device; ``ctx`` supplies ``models``
    (teacher, student), ``normalize`` and the ``generator``. Both networks are put in eval mode for the
    preview (restored after), so a HARD agent does not update its augmentor here.
    """
    teacher, student = teacher_and_student(ctx, "preview")
    x = ctx.normalize(batch_uint8.images)
    with eval_mode(teacher, student):
        x_gen = agent.generate(x, ctx)
        preds = [(_predict(teacher, v), _predict(student, v)) for v in (x, x_gen)]
    images = [_to_rgb(ctx, x), _to_rgb(ctx, x_gen)]
    return _save_grid(images, preds, batch_uint8.labels.cpu(), classes, Path(path), type(agent).__name__)


def _save_grid(
    images: list[Tensor], preds: list[tuple[Tensor, Tensor]], labels: Tensor, classes: Sequence[str] | None,
    path: Path, title: str,
) -> Path:
    from matplotlib.figure import Figure  # no pyplot: no global backend, works headless

    def name(i: Tensor) -> str:
        return classes[int(i)] if classes is not None else str(int(i))

    n = len(labels)
    cols = min(COLUMNS, n)
    blocks = math.ceil(n / cols)
    fig = Figure(figsize=(1.5 * cols, 3.2 * blocks), layout="constrained")
    axes = fig.subplots(2 * blocks, cols, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for i in range(n):
        block, col = divmod(i, cols)
        for row, kind in enumerate(("original", "generated")):
            t, s = preds[row][0][i], preds[row][1][i]
            ax = axes[2 * block + row, col]
            img = images[row][i].numpy()
            ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=1)
            ax.set_title(f"{kind} y={name(labels[i])}\nT={name(t)} S={name(s)}", fontsize=7,
                         color="black" if t == s else "red")
    fig.suptitle(f"{title}: red = teacher and student disagree")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    return path
