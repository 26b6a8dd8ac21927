"""rolekd.quant: DoReFa quantisers, model conversion, warm start and packed export."""

from __future__ import annotations

import copy
import os

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rolekd.models import ActivationSite, FeatureTaps, build_model, default_taps
from rolekd.pipeline.commands import export
from rolekd.quant import (
    ActQuant,
    QuantConv2d,
    QuantLinear,
    export_packed,
    load_packed,
    model_size_report,
    pack_codes,
    quantize_activation,
    quantize_k,
    quantize_model,
    quantize_weight,
    unpack_codes,
    warm_start,
)

BITS = [1, 2, 3, 4, 5, 6, 7, 8]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These tensors are tiny; on an oversubscribed 2-core box, 2 OpenMP threads were measured ~4x slower than 1."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def resnet8(**kw) -> nn.Module:
    return build_model("resnet8", 10, width=16, **kw)


def meta_for(w: int, a: int) -> dict:
    return {"model": "resnet8", "num_classes": 10, "model_args": {"width": 16}, "w_bits": w, "a_bits": a}


def images(n: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def randomise_bn(model: nn.Module) -> None:
    """Non-trivial BN statistics so eval-mode outputs depend on the buffers too."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
            m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))


# ---------------------------------------------------------------- quantisers


@pytest.mark.parametrize("k", BITS)
def test_weight_has_at_most_2k_levels_in_unit_range(k):
    q = quantize_weight(torch.randn(4096) * 0.1, k)
    assert q.unique().numel() <= 2**k
    assert q.abs().max() <= 1.0


def test_two_bit_weight_levels():
    q = quantize_weight(torch.randn(4096), 2)
    assert torch.allclose(q.unique(), torch.tensor([-1.0, -1 / 3, 1 / 3, 1.0]))


def test_one_bit_weights_are_plus_minus_mean_abs():
    w = torch.randn(1000)
    q = quantize_weight(w, 1)
    e = w.abs().mean()
    assert set(q.unique().tolist()) == {-e.item(), e.item()}
    assert torch.equal(q > 0, w >= 0)


@pytest.mark.parametrize("k", BITS)
def test_activation_has_at_most_2k_levels_in_0_1(k):
    a = quantize_activation(torch.randn(4096) * 2, k)
    assert a.unique().numel() <= 2**k
    assert a.min() >= 0 and a.max() <= 1


def test_activation_ste_gradient_is_identity_inside_clip_and_zero_outside():
    x = torch.tensor([-0.5, 0.2, 0.45, 0.7, 1.5], requires_grad=True)
    quantize_activation(x, 2).backward(torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0]))
    assert torch.equal(x.grad, torch.tensor([0.0, 2.0, 3.0, 4.0, 0.0]))


def test_quantize_k_passes_gradient_straight_through():
    x = torch.rand(100, requires_grad=True)
    quantize_k(x, 3).sum().backward()
    assert torch.equal(x.grad, torch.ones(100))


def test_weight_quantiser_has_a_gradient():
    w = torch.randn(64, requires_grad=True)
    for k in (1, 2):
        w.grad = None
        quantize_weight(w, k).pow(2).sum().backward()
        assert torch.isfinite(w.grad).all() and w.grad.abs().sum() > 0


@pytest.mark.parametrize("bits", [0, 9, 33, -1, True, 2.0])
def test_invalid_bits_are_errors(bits):
    with pytest.raises(ValueError, match="1-8 or 32"):
        quantize_model(resnet8(), bits, 4)
    with pytest.raises(ValueError, match="1-8 or 32"):
        quantize_model(resnet8(), 4, bits)


# ---------------------------------------------------------------- conversion


def _weighted(model: nn.Module) -> dict[str, nn.Module]:
    return {n: m for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}


def _check_first_last_kept(model: nn.Module, first: str, last: str) -> None:
    modules = _weighted(model)
    assert type(modules[first]) in (nn.Conv2d, nn.Linear)
    assert type(modules[last]) in (nn.Conv2d, nn.Linear)
    others = [m for n, m in modules.items() if n not in (first, last)]
    assert others and all(isinstance(m, (QuantConv2d, QuantLinear)) for m in others)


@pytest.mark.parametrize(
    "name, kw, first, last",
    [("resnet18", {"width": 8}, "conv1", "fc"), ("alexnet", {}, "conv1.0", "fc"), ("cnn", {}, "stage1.0", "fc")],
)
def test_first_and_last_layers_stay_full_precision(name, kw, first, last):
    model = build_model(name, 10, **kw)
    report = quantize_model(model, 2, 2)
    _check_first_last_kept(model, first, last)
    assert report.order_source == "trace"
    assert {first, last} <= set(report.full_precision)


def test_user_sequential_first_and_last_stay_full_precision():
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10),
    )
    quantize_model(model, 4, 4)
    _check_first_last_kept(model, "0", "8")
    assert [type(model[i]) for i in (1, 3, 5)] == [ActQuant, ActQuant, nn.ReLU]  # the classifier's input stays fp


class HeadFirst(nn.Module):
    """Registers the classifier before the stem: only the execution order tells first from last."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(8, 10)
        self.body = nn.Conv2d(8, 8, 3, padding=1)
        self.act = nn.ReLU()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)

    def forward(self, x):
        return self.head(self.body(self.act(self.stem(x))).mean((2, 3)))


def test_first_and_last_come_from_execution_order():
    model = HeadFirst()
    report = quantize_model(model, 2, 2)
    assert type(model.stem) is nn.Conv2d and type(model.head) is nn.Linear
    assert isinstance(model.body, QuantConv2d) and isinstance(model.act, ActQuant)
    assert report.order_source == "trace"


class TwoInputs(nn.Sequential):
    def forward(self, x, scale):  # a dummy single-tensor forward cannot run this
        return super().forward(x) * scale


def test_registration_order_is_the_fallback_when_no_dummy_forward_runs():
    model = TwoInputs(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    report = quantize_model(model, 2, 2)
    assert report.order_source == "registration"
    assert [type(m) for m in model] == [nn.Linear, ActQuant, QuantLinear, nn.ReLU, nn.Linear]


def test_relus_on_the_raw_input_stay_relu():
    model = nn.Sequential(nn.ReLU(), nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    quantize_model(model, 2, 2)
    assert [type(model[i]) for i in (0, 2, 4)] == [nn.ReLU, ActQuant, nn.ReLU]


def test_resnet_activation_placement_follows_role_kd():
    model = resnet8()
    report = quantize_model(model, 2, 2)
    blocks = [f"layer{i}.0" for i in range(1, 5)]
    # each block's input (the stem's output for layer1.0) and its conv0+BN+ReLU output; not the pooled FC input
    assert report.activations == tuple(f"{b}.{site}" for b in blocks for site in ("act_in", "act_mid"))
    assert report.full_precision == ("conv1", "fc", "act_out")
    assert all(isinstance(model.get_submodule(n), ActQuant) for n in report.activations)
    assert type(model.act_out) is ActivationSite
    relus = [n for n, m in model.named_modules() if isinstance(m, nn.ReLU)]
    assert relus == ["relu"] + [f"{b}.relu{k}" for b in blocks for k in (1, 2)]  # every ReLU stays full precision
    assert not any(isinstance(m, ActQuant) for m in model.layer1[0].relu2.modules())
    assert isinstance(model.layer4[0].shortcut[0], QuantConv2d)  # 1x1 projections are quantised


@pytest.mark.parametrize("name, kw", [("resnet8", {"width": 16}), ("resnet20", {"width": 8})])
def test_resnet_sites_are_found_in_registration_order_too(name, kw):
    traced, registered = build_model(name, 10, **kw), build_model(name, 10, **kw)
    by_trace = quantize_model(traced, 2, 2)
    by_registration = quantize_model(registered, 2, 2, example_input=torch.zeros(1, 5, 32, 32))  # cannot run
    assert (by_trace.order_source, by_registration.order_source) == ("trace", "registration")
    assert by_registration.activations == by_trace.activations
    assert by_registration.full_precision == by_trace.full_precision
    assert by_registration.weight_layers == by_trace.weight_layers


def test_resnet_without_keep_first_last_quantises_the_classifier_input_too():
    model = resnet8()
    report = quantize_model(model, 2, 2, keep_first_last=False)
    assert report.full_precision == () and report.activations[-1] == "act_out"
    assert isinstance(model.act_out, ActQuant) and type(model.relu) is nn.ReLU


def test_user_model_with_activation_sites_is_quantised_at_its_sites_only():
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.ReLU(), ActivationSite(), nn.Conv2d(8, 8, 3), nn.ReLU(), ActivationSite(),
        nn.Conv2d(8, 8, 3), nn.ReLU(), ActivationSite(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10),
    )
    report = quantize_model(model, 2, 2)
    assert report.activations == ("2", "5") and report.full_precision == ("0", "11", "8")
    kinds = [nn.ReLU, ActQuant, nn.ReLU, ActQuant, nn.ReLU, ActivationSite]  # the last site feeds the classifier
    assert [type(model[i]) for i in (1, 2, 4, 5, 7, 8)] == kinds


# --------------------------------------------- feature taps of a quantised ResNet (role-kd: full precision)

RESNETS = [("resnet8", {"width": 16}), ("resnet20", {"width": 8}), ("resnet18", {"width": 8})]


def _quantized_relu(model: nn.Module, path: str, bits: int) -> None:
    parent, _, child = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, ActQuant(bits))


def old_style_student(teacher: nn.Module, w_bits: int, a_bits: int, keep_first_last: bool) -> nn.Module:
    """The student as built before the sites existed, by hand (no quantize_model): every ReLU is the quantiser,
    except the last block's final ReLU (the pooled FC input) unless keep_first_last=False; the sites stay identities."""
    student = copy.deepcopy(teacher)
    for name, m in list(student.named_modules()):
        if type(m) in (nn.Conv2d, nn.Linear) and (not keep_first_last or name not in ("conv1", "fc")):
            parent, _, child = name.rpartition(".")
            layer = (QuantConv2d if type(m) is nn.Conv2d else QuantLinear).from_float(m, w_bits)
            setattr(student.get_submodule(parent) if parent else student, child, layer)
    relus = [n for n, m in student.named_modules() if type(m) is nn.ReLU]
    last = f"{student.default_taps[-1]}.relu2"
    assert relus[0] == "relu" and relus[-1] == last
    for name in relus:
        if not keep_first_last or name != last:
            _quantized_relu(student, name, a_bits)
    return student


def _run(model: nn.Module, x: torch.Tensor):
    """Logits, the default taps, and the gradients of the parameters and of x (loss: squared logits)."""
    x = x.clone().requires_grad_(True)
    for p in model.parameters():
        p.grad = None
    with FeatureTaps(model, default_taps(model)) as taps:
        logits = model(x)
        features = [f.detach() for f in taps.features]
    logits.square().sum().backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    return logits.detach(), features, grads, x.grad


@pytest.mark.parametrize("name, kw", RESNETS)
@pytest.mark.parametrize("w, a, keep", [(2, 2, True), (1, 4, True), (2, 2, False)])
def test_moving_the_quantiser_to_the_block_input_changes_no_output(name, kw, w, a, keep):
    teacher = build_model(name, 10, **kw)
    randomise_bn(teacher)
    reference = old_style_student(teacher, w, a, keep)
    student = copy.deepcopy(teacher)
    quantize_model(student, w, a, keep_first_last=keep)
    x = images(4, seed=3)
    for mode in ("train", "eval"):  # batch statistics, then (updated) running statistics
        ref_logits, ref_taps, ref_grads, ref_xgrad = _run(reference.train(mode == "train"), x)
        logits, taps, grads, xgrad = _run(student.train(mode == "train"), x)
        assert torch.equal(logits, ref_logits), mode
        assert grads.keys() == ref_grads.keys()
        assert all(torch.equal(grads[n], ref_grads[n]) for n in grads), mode  # same backward (the STE masks agree)
        assert torch.equal(xgrad, ref_xgrad), mode
        # the old taps were the quantiser's output; the new ones are its input (the last one too at keep=False)
        for i, (tap, ref_tap) in enumerate(zip(taps, ref_taps, strict=True)):
            quantised = keep and i == len(taps) - 1
            assert torch.equal(tap if quantised else quantize_activation(tap, a), ref_tap), (mode, i)
    for (key, value), ref_value in zip(student.state_dict().items(), reference.state_dict().values(), strict=True):
        assert torch.equal(value, ref_value), key  # same BN running statistics after the train-mode forwards


@pytest.mark.parametrize("name, kw", RESNETS)
def test_two_bit_resnet_taps_are_full_precision(name, kw):
    model = build_model(name, 10, **kw)
    quantize_model(model, 2, 2)
    with FeatureTaps(model, default_taps(model)) as taps:
        model(images(8))
        for path, feature in zip(taps.paths, taps.features, strict=True):
            assert feature.unique().numel() > 4, path  # a 2-bit activation has at most 4 values {0, 1/3, 2/3, 1}
            assert feature.min() == 0 and feature.max() > 1, path  # post-ReLU, not clipped to [0, 1]


@pytest.mark.parametrize("name, kw", RESNETS)
def test_kd_gradient_reaches_a_resnet_tap_above_one(name, kw):
    model = build_model(name, 10, **kw)
    quantize_model(model, 2, 2)
    pre: dict[str, torch.Tensor] = {}

    def keep_input(path):
        def hook(_module, inputs):
            inputs[0].retain_grad()
            pre[path] = inputs[0]
        return hook

    paths = default_taps(model)
    handles = [model.get_submodule(f"{p}.relu2").register_forward_pre_hook(keep_input(p)) for p in paths]
    with FeatureTaps(model, paths) as taps:
        model(images(8))
        sum(f.sum() for f in taps.features).backward()  # a feature-KD loss on the taps alone
    for h in handles:
        h.remove()
    for path in paths:
        above = pre[path].detach() > 1
        assert above.any(), path
        assert torch.equal(pre[path].grad[above], torch.ones(int(above.sum()))), path  # not cut by a clip at 1


def test_alexnet_placement_is_unchanged_and_its_taps_are_post_quantiser():
    model = build_model("alexnet", 10)
    assert not any(isinstance(m, ActivationSite) for m in model.modules())
    report = quantize_model(model, 2, 2)
    assert report.activations == ("conv1.2", "conv2.2", "conv3.2", "conv4.2", "conv5.2", "fc0.2")
    assert report.full_precision == ("conv1.0", "fc", "fc1.2")
    assert all(isinstance(model.get_submodule(n), ActQuant) for n in report.activations)
    assert type(model.fc1[2]) is nn.ReLU
    assert default_taps(model) == ["pool2", "conv3", "conv4", "pool5"]
    model.eval()
    with torch.no_grad(), FeatureTaps(model, default_taps(model)) as taps:
        model(images(2))
        for path, feature in zip(taps.paths, taps.features, strict=True):
            levels = feature.unique()
            assert levels.numel() <= 4 and levels.min() >= 0 and levels.max() <= 1, path  # role-kd: post-quantiser


def _resnet_state_keys(blocks: list[int], projection: bool) -> list[str]:
    """The state_dict keys a CifarResNet checkpoint has always had (the activation sites add none)."""

    def bn(prefix):
        return [f"{prefix}.{k}" for k in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")]

    keys = ["conv1.weight", *bn("bn1")]
    for i, n in enumerate(blocks, 1):
        for j in range(n):
            p = f"layer{i}.{j}"
            keys += [f"{p}.conv1.weight", *bn(f"{p}.bn1"), f"{p}.conv2.weight", *bn(f"{p}.bn2")]
            if projection and i > 1 and j == 0:
                keys += [f"{p}.shortcut.0.weight", *bn(f"{p}.shortcut.1")]
    return keys + ["fc.weight", "fc.bias"]


@pytest.mark.parametrize("name, kw, blocks, projection", [
    ("resnet8", {"width": 16}, [1, 1, 1, 1], True), ("resnet18", {"width": 8}, [2, 2, 2, 2], True),
    ("resnet20", {"width": 8}, [3, 3, 3], False),
])
def test_resnet_state_dict_keys_are_unchanged_by_the_sites(name, kw, blocks, projection):
    model = build_model(name, 10, **kw)
    assert list(model.state_dict()) == _resnet_state_keys(blocks, projection)
    quantize_model(model, 2, 2)
    assert list(model.state_dict()) == _resnet_state_keys(blocks, projection)


def test_converted_layers_keep_parameters_and_state_dict_keys():
    model = resnet8()
    params = {n: p for n, p in model.named_parameters()}
    keys = list(model.state_dict())
    quantize_model(model, 2, 2)
    assert list(model.state_dict()) == keys
    assert all(p is params[n] for n, p in model.named_parameters())


def test_converting_twice_same_bits_is_idempotent_and_different_bits_is_an_error():
    model = resnet8()
    first = quantize_model(model, 2, 2)
    modules = list(model.modules())
    assert quantize_model(model, 2, 2) is first
    assert list(model.modules()) == modules and model.quant_bits == (2, 2)
    with pytest.raises(ValueError, match="already quantised to W/A = 2/2"):
        quantize_model(model, 4, 4)


def test_model_without_conv_or_linear_is_an_error():
    with pytest.raises(ValueError, match="no nn.Conv2d or nn.Linear"):
        quantize_model(nn.Sequential(nn.ReLU(), nn.Flatten()), 2, 2)
    with pytest.raises(ValueError, match="besides its first and last layer"):
        quantize_model(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)), 2, 2)


def test_activation_bits_without_relu_modules_is_an_error():
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 2))
    with pytest.raises(ValueError, match="nn.ReLU"):
        quantize_model(model, 2, 2)
    quantize_model(model, 2, 32)  # weights alone are fine
    assert isinstance(model[2], QuantLinear)


def test_full_precision_bits_reproduce_the_model_exactly():
    model = resnet8().eval()
    randomise_bn(model)
    x = images()
    expected = model(x)
    quantize_model(model, 32, 32)
    assert torch.equal(model(x), expected)
    assert model.quant_bits == (32, 32)


def test_warm_start_makes_the_32_bit_student_match_the_teacher():
    teacher = resnet8().eval()
    randomise_bn(teacher)
    student = resnet8()
    quantize_model(student, 32, 32)
    warm_start(student, teacher.state_dict())
    x = images()
    assert torch.equal(student.eval()(x), teacher(x))


def test_warm_start_loads_the_latent_weights_of_a_low_bit_student():
    teacher = resnet8()
    student = resnet8()
    quantize_model(student, 2, 2)
    warm_start(student, teacher.state_dict())
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in student.state_dict().items())


def test_warm_start_from_a_different_architecture_names_the_first_mismatch():
    student = resnet8()
    with pytest.raises(ValueError, match=r"'conv1.weight' has shape \(32, 3, 3, 3\), expected \(16, 3, 3, 3\)"):
        warm_start(student, build_model("resnet8", 10, width=32).state_dict())
    with pytest.raises(ValueError, match="unexpected 'layer1.1.conv1.weight'"):
        warm_start(student, build_model("resnet18", 10, width=16).state_dict())


def test_eval_cache_follows_weight_updates():
    layer = QuantConv2d.from_float(nn.Conv2d(3, 4, 3), 2).eval()
    with torch.no_grad():
        first = layer.quantized_weight()
        assert layer.quantized_weight() is first  # cached
        layer.weight.mul_(-1)  # in-place change: new version
        again = layer.quantized_weight()
        assert again is not first and torch.equal(again, quantize_weight(layer.weight, 2))
    assert layer.quantized_weight().requires_grad  # training path: never the cache


def test_two_bit_resnet8_still_learns():
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    labels = torch.arange(64) % 10  # learnable: each image is its class prototype plus noise (8x8 keeps it fast)
    x = torch.randn(10, 3, 8, 8, generator=g)[labels] + 0.5 * torch.randn(64, 3, 8, 8, generator=g)
    model = resnet8()
    quantize_model(model, 2, 2)
    inner = model.layer2[0].conv1.weight.detach().clone()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss = F.cross_entropy(model(x), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.25 * losses[0], losses
    assert not torch.equal(model.layer2[0].conv1.weight, inner)  # the STE reached the quantised layers


# ---------------------------------------------------------------- export


@pytest.mark.parametrize("bits", BITS)
def test_pack_unpack_roundtrip(bits):
    codes = torch.randint(0, 2**bits, (1001,), dtype=torch.uint8)
    packed = pack_codes(codes, bits)
    assert packed.dtype == torch.uint8 and packed.numel() == -(-1001 * bits // 8)
    assert torch.equal(unpack_codes(packed, bits, 1001), codes)


@pytest.mark.parametrize("w, a", [(2, 2), (1, 4), (4, 4), (3, 32), (32, 32)])
def test_export_then_load_gives_identical_logits(tmp_path, w, a):
    model = resnet8()
    randomise_bn(model)
    quantize_model(model, w, a)
    model.eval()
    x = images()
    expected = model(x)
    path = tmp_path / "student.pt"
    report = export_packed(model, path, meta_for(w, a))
    loaded = load_packed(path)
    assert torch.equal(loaded(x), expected)
    assert report.packed_bytes == os.path.getsize(path)
    assert getattr(loaded, "quant_bits", (32, 32)) == (w, a)


def test_export_round_trip_keeps_the_activation_sites_and_full_precision_taps(tmp_path):
    model = build_model("resnet20", 10, width=8)  # option-A shortcuts
    randomise_bn(model)
    report = quantize_model(model, 2, 2)
    model.eval()
    meta = {"model": "resnet20", "num_classes": 10, "model_args": {"width": 8}, "w_bits": 2, "a_bits": 2}
    export_packed(model, tmp_path / "p.pt", meta)
    loaded = load_packed(tmp_path / "p.pt")
    assert loaded.quant_report.activations == report.activations
    assert loaded.quant_report.full_precision == report.full_precision
    x = images()
    mine, theirs = FeatureTaps(model, default_taps(model)), FeatureTaps(loaded, default_taps(loaded))
    with torch.no_grad(), mine, theirs:
        assert torch.equal(loaded(x), model(x))
        assert all(torch.equal(a, b) for a, b in zip(mine.features, theirs.features, strict=True))
        assert all(f.unique().numel() > 4 for f in theirs.features)


def test_two_bit_resnet8_file_is_at_least_8x_smaller(tmp_path):
    model = resnet8()
    quantize_model(model, 2, 2)
    torch.save(model.state_dict(), tmp_path / "fp32.pt")
    report = export_packed(model, tmp_path / "packed.pt", meta_for(2, 2))
    ratio = os.path.getsize(tmp_path / "fp32.pt") / os.path.getsize(tmp_path / "packed.pt")
    assert ratio >= 8, ratio  # measured: ~10.8x (the payload alone is ~13x; the rest is per-tensor file overhead)
    assert report.ratio >= 8
    sizes = model_size_report(model)
    assert sizes["packed_bytes"] * 8 < sizes["fp32_bytes"] and sizes["w_bits"] == 2


def test_export_is_plain_tensors_and_loads_with_weights_only(tmp_path):
    model = resnet8()
    quantize_model(model, 2, 2)
    export_packed(model, tmp_path / "p.pt", meta_for(2, 2))
    payload = torch.load(tmp_path / "p.pt", weights_only=True)
    assert payload["meta"] == meta_for(2, 2)
    assert payload["layers"]["layer1.0.conv1"]["codes"].dtype == torch.uint8
    assert "layer1.0.conv1.weight" not in payload["state"] and "conv1.weight" in payload["state"]
    assert [p.name for p in tmp_path.iterdir()] == ["p.pt"]  # no temp file left behind


_UNPICKLED = []


class _Payload:
    """Unpickling this runs code; a weights_only loader must refuse it."""

    def __reduce__(self):
        return (_UNPICKLED.append, ("ran",))


def test_loading_never_unpickles_arbitrary_objects(tmp_path):
    bad = tmp_path / "bad.pt"
    torch.save({"format": "rolekd-packed-v1", "meta": _Payload(), "model": {}}, bad)
    with pytest.raises(ValueError, match="bad.pt"):
        load_packed(bad)
    with pytest.raises(ValueError, match="bad.pt"):
        export(bad, tmp_path / "out.pt")
    assert _UNPICKLED == []


def test_export_command_from_a_training_checkpoint(tmp_path):
    model = resnet8()
    quantize_model(model, 2, 2)
    ckpt = tmp_path / "ckpt.pt"
    torch.save({"model": model.state_dict(), "meta": {**meta_for(2, 2), "role": "student"}, "epoch": 3}, ckpt)
    table = export(ckpt, tmp_path / "out" / "student.pt").table()
    assert "fp32" in table and "packed W2/A2" in table and "x" in table
    x = images()
    assert torch.equal(load_packed(tmp_path / "out" / "student.pt")(x), model.eval()(x))


def test_bad_checkpoints_are_one_line_errors_naming_the_file(tmp_path):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    no_meta = tmp_path / "no_meta.pt"
    torch.save({"model": resnet8().state_dict()}, no_meta)
    bad_meta = tmp_path / "bad_meta.pt"
    torch.save({"model": resnet8().state_dict(), "meta": {**meta_for(2, 2), "w_bits": 9}}, bad_meta)
    cases = [
        (tmp_path / "missing.pt", "not found"), (corrupt, "not a loadable checkpoint"), (no_meta, "meta"), (bad_meta, "w_bits")
    ]
    for path, what in cases:
        with pytest.raises(ValueError, match=what) as info:
            export(path, tmp_path / "out.pt")
        assert path.name in str(info.value) and "\n" not in str(info.value)


def test_export_rejects_meta_that_does_not_match_the_model(tmp_path):
    model = resnet8()
    quantize_model(model, 2, 2)
    with pytest.raises(ValueError, match="W/A = 2/2 but meta says 4/4"):
        export_packed(model, tmp_path / "p.pt", meta_for(4, 4))
    with pytest.raises(ValueError, match="does not rebuild"):
        export_packed(model, tmp_path / "p.pt", {**meta_for(2, 2), "model_args": {"width": 32}})
    assert not (tmp_path / "p.pt").exists()


def test_loaded_model_is_a_frozen_inference_copy(tmp_path):
    model = resnet8()
    quantize_model(model, 2, 2)
    export_packed(copy.deepcopy(model), tmp_path / "p.pt", meta_for(2, 2))
    loaded = load_packed(tmp_path / "p.pt")
    assert not loaded.training
    assert not loaded.layer1[0].conv1.weight.requires_grad
    assert model_size_report(loaded) == model_size_report(model)
