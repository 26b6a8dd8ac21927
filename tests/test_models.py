import pytest
import torch
from torch import nn

from rolekd.models import ActivationSite, FeatureTaps, available_models, build_model, default_taps, register_model

TAP_SHAPES = {
    "resnet18": [(64, 32, 32), (128, 16, 16), (256, 8, 8), (512, 4, 4)],
    "resnet8": [(64, 32, 32), (128, 16, 16), (256, 8, 8), (512, 4, 4)],
    "resnet20": [(16, 32, 32), (32, 16, 16), (64, 8, 8)],
    "alexnet": [(192, 8, 8), (384, 8, 8), (256, 8, 8), (256, 4, 4)],
    "cnn": [(16, 16, 16), (32, 8, 8), (64, 4, 4)],
    "mlp": [(256,), (256,)],
}


@pytest.mark.parametrize("name", list(TAP_SHAPES))
@pytest.mark.parametrize("classes", [10, 100])
def test_output_and_tap_shapes(name, classes):
    model = build_model(name, classes).eval()
    x = torch.randn(2, 3, 32, 32)
    with FeatureTaps(model, default_taps(model)) as taps:
        out = model(x)
        assert out.shape == (2, classes)
        assert [tuple(f.shape[1:]) for f in taps.features] == TAP_SHAPES[name]


def test_resnet_depths_and_registry():
    assert {"resnet8", "resnet18", "resnet20", "resnet32", "resnet56", "alexnet", "cnn", "mlp"} <= set(available_models())
    n18 = sum(isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3) for m in build_model("resnet18", 10).modules())
    n56 = sum(isinstance(m, nn.Conv2d) for m in build_model("resnet56", 10).modules())
    assert n18 == 17 and n56 == 55  # 16 block convs + stem; ResNet-56: 54 + stem, option-A shortcuts


def test_unknown_model_lists_known_ones():
    with pytest.raises(ValueError, match="unknown model 'resnet1000'.*resnet18"):
        build_model("resnet1000", 10)


def test_user_model_registers_and_taps_are_removed():
    @register_model("test_tiny_user_net")
    def tiny(num_classes, in_channels=3):
        return nn.Sequential(nn.Conv2d(in_channels, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, num_classes))

    model = build_model("test_tiny_user_net", 5)
    taps = FeatureTaps(model, ["1"])
    model(torch.randn(1, 3, 8, 8))
    assert taps.features[0].shape == (1, 4, 6, 6)
    taps.remove()
    assert all(len(m._forward_hooks) == 0 for m in model.modules())
    with pytest.raises(ValueError, match="feature tap 'nope'"):
        FeatureTaps(model, ["nope"])


@pytest.mark.parametrize("name", ["resnet8", "resnet20", "resnet56"])
def test_resnet_marks_each_block_input_and_the_classifier_input_as_activation_sites(name):
    """The sites (quantised in a student, reference §B4) are parameter-free identities at each block's input, after
    each block's first conv+BN+ReLU and on the pooled classifier's input; the taps are the blocks' own outputs."""
    model = build_model(name, 10, width=8).eval()
    sites = {n: m for n, m in model.named_modules() if isinstance(m, ActivationSite)}
    blocks = [n for n, m in model.named_modules() if type(m).__name__ == "BasicBlock"]
    assert list(sites) == [f"{b}.{s}" for b in blocks for s in ("act_in", "act_mid")] + ["act_out"]
    assert all(not list(m.parameters()) and not list(m.buffers()) for m in sites.values())
    seen: dict[str, tuple] = {}

    def record(name):
        def hook(_module, inputs, output):
            seen[name] = (inputs[0], output)  # returns None: the output is left alone
        return hook

    watched = {**sites, **{b: model.get_submodule(b) for b in blocks}, "relu": model.relu}
    handles = [m.register_forward_hook(record(n)) for n, m in watched.items()]
    model(torch.randn(2, 3, 32, 32))
    for h in handles:
        h.remove()
    assert all(seen[n][0] is seen[n][1] for n in sites)  # identities
    producers = ["relu", *blocks]  # the stem's ReLU feeds the first block
    for producer, block in zip(producers, blocks):
        assert seen[f"{block}.act_in"][0] is seen[producer][1]
    assert seen["act_out"][0] is seen[blocks[-1]][1] and blocks[-1] == default_taps(model)[-1]


def test_taps_are_inferred_for_torchvision_style_and_timm_style_models():
    from torch import nn

    from rolekd.models.registry import default_taps, inferred_taps

    class TorchvisionLike(nn.Module):  # torchvision's ResNet layout: layer1..layer4 of blocks
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 4, 3)
            for i in range(1, 5):
                self.add_module(f"layer{i}", nn.Sequential(nn.Conv2d(4, 4, 3), nn.Conv2d(4, 4, 3)))

    taps, how = inferred_taps(TorchvisionLike())
    assert taps == ["layer1.1", "layer2.1", "layer3.1", "layer4.1"] and "layer1..layer4" in how

    class TimmLike(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, 4, 3)
            self.stages = nn.Sequential(nn.Conv2d(4, 4, 3), nn.Conv2d(4, 4, 3))
            self.feature_info = [{"module": "stem", "num_chs": 4}, {"module": "stages.1", "num_chs": 4}]

    assert default_taps(TimmLike()) == ["stem", "stages.1"]
    assert default_taps(nn.Sequential(nn.Linear(2, 2))) == []


def test_a_model_without_taps_names_the_config_key_and_candidates():
    import pytest
    from torch import nn

    from rolekd.kd import build_objective

    flat = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))
    with pytest.raises(ValueError, match=r"teacher\.taps: \[\.\.\.\]") as err:
        build_objective({"method": "kdsvd"}, flat, build_model("resnet8", 10, width=4))
    assert "\n" not in str(err.value)
