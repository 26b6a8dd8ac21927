"""Model registry: a name maps to a builder ``builder(num_classes, **kwargs) -> nn.Module``.

Configs name models by string; a user's own network joins with :func:`register_model`.
"""

from __future__ import annotations

from typing import Callable

from torch import nn

ModelBuilder = Callable[..., nn.Module]
_REGISTRY: dict[str, ModelBuilder] = {}


def register_model(name: str | None = None) -> Callable[[ModelBuilder], ModelBuilder]:
    """Decorator registering ``builder(num_classes, **kwargs)`` under ``name`` (default: its __name__)."""

    def wrap(builder: ModelBuilder) -> ModelBuilder:
        key = name or builder.__name__
        if key in _REGISTRY and _REGISTRY[key] is not builder:
            raise ValueError(f"model name {key!r} is already registered")
        _REGISTRY[key] = builder
        return builder

    return wrap


def available_models() -> list[str]:
    return sorted(_REGISTRY)


def build_model(name: str, num_classes: int, **kwargs) -> nn.Module:
    """Build a registered model; an unknown name is a one-line error listing the known ones."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; expected one of: {', '.join(available_models())}")
    try:
        return _REGISTRY[name](num_classes, **kwargs)
    except TypeError as exc:
        raise ValueError(f"model {name!r} rejected its arguments {kwargs}: {exc}") from exc


def default_taps(model: nn.Module) -> list[str]:
    """Module paths tapped for feature KD: the model's ``default_taps`` attribute, if it has one."""
    return list(getattr(model, "default_taps", []))
