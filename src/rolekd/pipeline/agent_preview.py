"""`rolekd augment-preview --agent`: what an adversarial agent generates for a trained teacher–student pair."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..augment.base import AugmentContext, Batch
from ..config import ExperimentConfig
from ..quant import load_network
from .setup import Prepared
from .stages import load_teacher


def load_student(path: str | Path, prep: Prepared) -> tuple[nn.Module, dict]:
    """A student checkpoint's network (quantised as it was trained) and the whole checkpoint."""
    loaded = load_network(path, device=prep.device, label=f"student {path}")
    return loaded.model.eval(), loaded.payload


def agent_preview_command(
    cfg: ExperimentConfig,
    prep: Prepared,
    agent_name: str,
    teacher_path: str | Path,
    student_path: str | Path,
    n: int,
    out: str | Path,
    seed: int,
) -> Path:
    """Write a PNG of ``n`` test images and the agent's samples generated from them.

    A HARD agent's learned augmentor is restored from the student's ``last.pt`` when it holds one;
    otherwise the preview shows the untrained augmentor and says so on stderr.
    """
    from ..agents import AGENTS, agent_preview, restore_from_checkpoint

    agent = AGENTS.get(agent_name, "--agent").build(cfg)  # an unknown name fails here, before any network loads
    teacher = load_teacher(teacher_path, cfg, prep)
    student, state = load_student(student_path, prep)
    restored = restore_from_checkpoint(agent, state)
    if agent_name == "hard" and not restored:
        import sys

        print(f"rolekd: note: {student_path} holds no HARD augmentor state; showing an untrained one", file=sys.stderr)
    test = prep.full.test
    images, labels = test.images[:n], test.labels[:n]
    gen = torch.Generator(device=prep.device).manual_seed(seed)
    ctx = AugmentContext(0, 1, gen, prep.normalizer.fill, models={"teacher": teacher.model, "student": student},
                         normalize=prep.normalizer)
    return agent_preview(agent, Batch(images, labels), ctx, out, classes=list(prep.full.classes))
