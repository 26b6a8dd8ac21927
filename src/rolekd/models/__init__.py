"""Model registry, CIFAR architectures and feature taps."""

from . import alexnet, resnet, small  # noqa: F401  (registers the built-in models)
from .registry import available_models, build_model, default_taps, model_builder, register_model
from .sites import ActivationSite
from .taps import FeatureTaps

__all__ = ["ActivationSite", "FeatureTaps", "available_models", "build_model", "default_taps", "register_model"]
