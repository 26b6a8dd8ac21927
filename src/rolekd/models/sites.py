"""Activation sites: explicit, parameter-free markers of where a low-bit student quantises its activations.

An :class:`ActivationSite` is the identity, so a full-precision network (a teacher) computes exactly what it would
without it and has the same state_dict. It marks a tensor that a quantised copy of the network should see through an
activation quantiser: :func:`rolekd.quant.quantize_model` replaces the sites of a model that has any, and leaves its
ReLUs full precision. This lets a model quantise a tensor where it is *consumed* (e.g. a residual block's input, seen
by both its conv and its shortcut) while the module that produced it, and a feature tap on that module, stay full
precision. A model without sites is quantised at its ``nn.ReLU`` modules instead.
"""

from __future__ import annotations

from torch import Tensor, nn


class ActivationSite(nn.Module):
    """The identity, marking a point where a quantised student's activations are quantised."""

    def forward(self, x: Tensor) -> Tensor:
        return x
