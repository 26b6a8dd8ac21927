"""Model registry: a name maps to a builder ``builder(num_classes, **kwargs) -> nn.Module``.

Configs name models by string; a user's own network joins with :func:`register_model`.
"""

from __future__ import annotations

from typing import Callable

from torch import nn

from ..registry import Registry

ModelBuilder = Callable[..., nn.Module]
_MODELS: Registry[ModelBuilder] = Registry("model")


def register_model(name: str | None = None) -> Callable[[ModelBuilder], ModelBuilder]:
    """Decorator registering ``builder(num_classes, **kwargs)`` under ``name`` (default: its __name__)."""
    return _MODELS.decorator(name)


def available_models() -> list[str]:
    return _MODELS.names()


def model_builder(name: str, field: str | None = None) -> ModelBuilder:
    """The registered builder (e.g. to read its signature); unknown names error naming ``field``."""
    return _MODELS.get(name, field)


def build_model(name: str, num_classes: int, **kwargs) -> nn.Module:
    """Build a registered model; an unknown name is a one-line error listing the known ones."""
    builder = _MODELS.get(name)
    try:
        return builder(num_classes, **kwargs)
    except TypeError as exc:
        raise ValueError(f"model {name!r} rejected its arguments {kwargs}: {exc}") from exc


def default_taps(model: nn.Module) -> list[str]:
    """Module paths tapped for feature KD: the model's ``default_taps`` attribute, else taps inferred for
    common architectures (:func:`inferred_taps`), else none."""
    if hasattr(model, "default_taps"):
        return list(model.default_taps)
    return inferred_taps(model)[0]


def inferred_taps(model: nn.Module) -> tuple[list[str], str]:
    """Taps for a model registered without ``default_taps``, and how they were found (for messages).

    timm models list their stage outputs in ``feature_info``; torchvision-style ResNets keep their
    stages as ``layer1``..``layer4``, tapped at each stage's last block as rolekd's own ResNets are.
    """
    modules = dict(model.named_modules())
    info = getattr(model, "feature_info", None)
    names = [entry.get("module") for entry in info] if isinstance(info, list) and all(isinstance(e, dict) for e in info) \
        else []
    if names and all(n in modules for n in names):
        return list(names), "timm's feature_info"
    stages = [f"layer{i}" for i in range(1, 10) if f"layer{i}" in modules]
    if stages and stages[0] == "layer1":
        taps = []
        for name in stages:
            stage = modules[name]
            last = list(stage._modules)[-1] if isinstance(stage, nn.Sequential) and len(stage) else None
            taps.append(f"{name}.{last}" if last is not None else name)
        return taps, "the last block of each stage layer1..layer" + str(len(stages))
    return [], "none found"
