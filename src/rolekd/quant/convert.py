"""Turn a full-precision model into a DoReFa student in place, and warm-start it from the teacher (paper §5.1).

What is converted:

- every ``nn.Conv2d`` / ``nn.Linear`` (exact types: a user's subclass keeps its own forward) becomes a
  :class:`QuantConv2d` / :class:`QuantLinear` sharing the same Parameters, except the **first** layer (the first
  Conv2d/Linear to run, i.e. the one that receives the input) and the **last** (the last to run, i.e. the one
  producing the logits), which stay full precision as in DoReFa and the paper;
- the activation sites become :class:`ActQuant` (``quantize_k(clip(x, 0, 1))``), except the sites that run after
  the last converted layer (they feed the full-precision classifier) or before the first layer (on the raw input).
  The activation sites are

  * the model's :class:`~rolekd.models.sites.ActivationSite` markers, if it has any; its ReLUs then all stay
    ``nn.ReLU``. The built-in CIFAR ResNets mark every block's input (``act_in``, seen by both its conv and its
    shortcut), the output of each block's first conv+BN+ReLU (``act_mid``) and the pooled classifier's input
    (``act_out``, kept full precision by the rule above). That is role-kd's placement (reference §B4): the
    quantiser runs at the *consuming* block's input, so a block's output -- the KD feature tap ``layerK.<last>`` --
    is the full-precision ReLU output and the KD gradient through it is not clipped at 1. The forward is the same
    as quantising the producing ReLU, since ``clip(relu(x), 0, 1) = clip(x, 0, 1)`` and each block's output has
    the next block as its only consumer; that includes the stem, whose ReLU stays and whose output is quantised as
    the first block's input.
  * otherwise (a model without markers, e.g. AlexNet or a user's ``--import`` model) every ``nn.ReLU`` module
    (exact type), the ReLU itself being replaced: the quantiser's clip subsumes it. For AlexNet this is role-kd's
    placement (after conv1..conv5 and fc0, not after fc1: the classifier's input), and its feature taps see the
    quantised activations, as role-kd's student taps do. Functional ``F.relu`` calls cannot be converted.

First/last are found by tracing one forward of a dummy batch with hooks that record the execution order
(``example_input``, or else the first of these zero batches that runs: ``(1, C, 32, 32)`` for each distinct Conv2d
input width ``C``, then ``(1, F)`` for each distinct Linear ``in_features``). Registration order can differ from
execution order (a head defined before the stem; a residual block that registers its projection shortcut after its
final activation). If that forward fails, registration order is used and the report says so. With
``keep_first_last=False`` every Conv2d/Linear and every activation site is converted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from ..models.sites import ActivationSite
from ..training.checkpoint import state_mismatch
from .dorefa import FULL_PRECISION, ActQuant, QuantConv2d, QuantLinear, check_bits

_WEIGHTED = (nn.Conv2d, nn.Linear)


@dataclass(frozen=True)
class QuantReport:
    """What :func:`quantize_model` did, by module path."""

    w_bits: int
    a_bits: int
    keep_first_last: bool
    weight_layers: tuple[str, ...]  # Conv2d/Linear whose weights are quantised (empty at w_bits = 32)
    activations: tuple[str, ...]  # sites (ActivationSite markers, else ReLUs) now ActQuant; () at a_bits = 32
    full_precision: tuple[str, ...]  # first/last layer and the activation sites outside them (raw / classifier input)
    order_source: str  # "trace" or "registration": how first/last were determined

    def __str__(self) -> str:
        kept = ", ".join(self.full_precision) or "nothing"
        return (
            f"DoReFa W/A = {self.w_bits}/{self.a_bits}: {len(self.weight_layers)} weight layers and "
            f"{len(self.activations)} activations quantised; full precision: {kept} (order from {self.order_source})"
        )


@dataclass(frozen=True)
class _Plan:
    weights: list[str]
    sites: list[str]  # activation sites to quantise
    kept: list[str]
    source: str


def quantize_model(
    model: nn.Module,
    w_bits: int,
    a_bits: int,
    keep_first_last: bool = True,
    example_input: Tensor | None = None,
) -> QuantReport:
    """Quantise ``model`` in place to W/A = ``w_bits``/``a_bits`` (1-8, or 32 = full precision) and report what changed.

    Records ``model.quant_bits = (w_bits, a_bits)`` and ``model.quant_report``. Converting again with the same
    settings returns the first report; different settings are an error (build a fresh model and warm-start it).
    """
    check_bits(w_bits, "w_bits")
    check_bits(a_bits, "a_bits")
    previous: QuantReport | None = getattr(model, "quant_report", None)
    if previous is not None:
        if (previous.w_bits, previous.a_bits, previous.keep_first_last) == (w_bits, a_bits, keep_first_last):
            return previous
        raise ValueError(
            f"model is already quantised to W/A = {previous.w_bits}/{previous.a_bits} "
            f"(keep_first_last={previous.keep_first_last}); cannot re-quantise to {w_bits}/{a_bits} "
            f"(keep_first_last={keep_first_last}): build a fresh model and warm_start it"
        )
    modules = dict(model.named_modules())
    plan = _plan(model, modules, keep_first_last, example_input)
    if not plan.weights:
        raise ValueError(
            f"{type(model).__name__} has no convertible nn.Conv2d/nn.Linear"
            + (" besides its first and last layer" if keep_first_last and plan.kept else "")
        )
    if a_bits != FULL_PRECISION and not plan.sites:
        raise ValueError(
            f"a_bits={a_bits} needs nn.ReLU modules (or ActivationSite markers) to replace, and "
            f"{type(model).__name__} has none outside the classifier's input "
            "(functional relu calls cannot be converted)"
        )
    replacements: dict[int, nn.Module] = {}
    if w_bits != FULL_PRECISION:
        replacements.update({id(modules[n]): _quantized_layer(modules[n], w_bits) for n in plan.weights})
    if a_bits != FULL_PRECISION:
        replacements.update({id(modules[n]): ActQuant(a_bits).train(modules[n].training) for n in plan.sites})
    _swap(model, replacements)
    report = QuantReport(
        w_bits, a_bits, keep_first_last,
        tuple(plan.weights) if w_bits != FULL_PRECISION else (),
        tuple(plan.sites) if a_bits != FULL_PRECISION else (),
        tuple(plan.kept), plan.source,
    )
    model.quant_bits = (w_bits, a_bits)
    model.quant_report = report
    return report


def _quantized_layer(layer: nn.Module, w_bits: int) -> nn.Module:
    if isinstance(layer, nn.Conv2d):
        return QuantConv2d.from_float(layer, w_bits)
    return QuantLinear.from_float(layer, w_bits)  # type: ignore[arg-type]


def _swap(model: nn.Module, replacements: dict[int, nn.Module]) -> None:
    """Replace children by identity, so a module registered under several names is replaced everywhere."""
    for parent in list(model.modules()):
        for key, child in list(parent._modules.items()):
            if child is not None and id(child) in replacements:
                setattr(parent, key, replacements[id(child)])


def _plan(
    model: nn.Module, modules: dict[str, nn.Module], keep_first_last: bool, example_input: Tensor | None
) -> _Plan:
    weighted = [n for n, m in modules.items() if type(m) in _WEIGHTED]
    sites = activation_sites(modules)
    if not weighted:
        raise ValueError(f"{type(model).__name__} has no nn.Conv2d or nn.Linear layer to quantise")
    if not keep_first_last:
        return _Plan(weighted, sites, [], "not needed")
    calls = _trace(model, {n: modules[n] for n in weighted + sites}, example_input)
    source = "trace"
    if calls is None or not any(n in weighted for n in calls):
        watched = set(weighted + sites)
        calls, source = [n for n in modules if n in watched], "registration"
    positions: dict[str, list[int]] = {}
    for i, name in enumerate(calls):
        positions.setdefault(name, []).append(i)
    weighted_set = set(weighted)
    weighted_calls = [n for n in calls if n in weighted_set]
    first, last = weighted_calls[0], weighted_calls[-1]
    start = min(positions[first])
    end = max((p for n in weighted if n != last for p in positions.get(n, [])), default=-1)
    # sites on the raw input or on the classifier's input: outside the quantised part of the network
    outside = [n for n in sites if n in positions and (max(positions[n]) < start or min(positions[n]) > end)]
    kept = list(dict.fromkeys([first, last, *outside]))
    weights = [n for n in weighted if n not in (first, last)]
    return _Plan(weights, [n for n in sites if n not in outside], kept, source)


def activation_sites(modules: Mapping[str, nn.Module]) -> list[str]:
    """Where activations are quantised: the ActivationSite markers if there are any, else every nn.ReLU module."""
    markers = [n for n, m in modules.items() if isinstance(m, ActivationSite)]
    return markers or [n for n, m in modules.items() if type(m) is nn.ReLU]


def _trace(model: nn.Module, watched: dict[str, nn.Module], example_input: Tensor | None) -> list[str] | None:
    """Module paths in the order they run on one eval-mode, no-grad forward; None if no input could be run."""
    calls: list[str] = []
    handles = [m.register_forward_hook(lambda *_, n=name: calls.append(n)) for name, m in watched.items()]
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        for x in [example_input] if example_input is not None else _dummy_inputs(model):
            calls.clear()
            try:
                with torch.no_grad():
                    model(x)
                return calls
            except Exception:  # a failed forward only means "try the next guess, then registration order"
                continue
        return None
    finally:
        for h in handles:
            h.remove()
        for m, mode in modes:
            m.training = mode


def _dummy_inputs(model: nn.Module) -> list[Tensor]:
    """Zero batches for each distinct Conv2d input width (as 32x32 CIFAR images), then each distinct Linear one.

    Registration order need not be execution order, so every candidate stem is tried; a wrong guess fails fast.
    """
    like = next(model.parameters())
    shapes: dict[tuple[int, ...], None] = {}
    for kind in _WEIGHTED:
        for m in model.modules():
            if type(m) is kind:
                shapes[(1, m.in_channels, 32, 32) if kind is nn.Conv2d else (1, m.in_features)] = None
    return [torch.zeros(shape, dtype=like.dtype, device=like.device) for shape in shapes]


def load_state_strict(model: nn.Module, state: Mapping[str, Tensor], source: str) -> None:
    """load_state_dict(strict=True), but a mismatch is a one-line ValueError naming ``source`` and the first
    difference (torch's own message lists every key over many lines)."""
    problem = state_mismatch(model.state_dict(), state)
    if problem is not None:
        raise ValueError(f"{source}: {problem}")
    model.load_state_dict(state, strict=True)


def warm_start(student: nn.Module, teacher_state_dict: Mapping[str, Tensor]) -> None:
    """Start the student from the teacher's full-precision weights (paper §5.1: same architecture).

    Quantised layers keep the fp32 latent weights under the original keys, so the teacher's state_dict (BN statistics
    included) loads as is; any key or shape difference is a one-line ValueError naming the first one.
    """
    load_state_strict(student, teacher_state_dict, "the teacher state_dict")
