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
    """Module paths tapped for feature KD: the model's ``default_taps`` attribute, if it has one."""
    return list(getattr(model, "default_taps", []))
