"""rolekd: knowledge distillation with role-wise data augmentation.

The Python API is the command line's own functions (:mod:`rolekd.pipeline.commands`)::

    import rolekd
    result = rolekd.run("demo", out="runs/demo")        # the whole method; result.table, result.report
    teacher = rolekd.train("demo", out="runs/teacher")  # TrainResult: accuracy, checkpoint, history
    student = rolekd.distill("demo", teacher=teacher.checkpoint, out="runs/student")
    rolekd.evaluate(student.checkpoint).accuracy

Attributes are imported on first use, so ``import rolekd`` stays cheap.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "describe_config", "distill", "evaluate", "export", "load_config", "plot", "preview", "run", "search", "train",
]


def __getattr__(name: str) -> Any:
    if name == "load_config":
        from .config import load_config

        return load_config
    if name in __all__:
        from .pipeline import commands

        return getattr(commands, name)
    raise AttributeError(f"module 'rolekd' has no attribute {name!r}")
