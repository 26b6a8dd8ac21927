"""CIFAR ResNets: the paper's ResNet-18/ResNet-8 (3x3 stem, 64-512 channels) and He et al.'s ResNet-20/32/56.

Every ReLU is its own ``nn.ReLU`` module and every stage is a named ``nn.Sequential``, so taps can name
``layerK.<last>`` (a block's output: its full-precision post-ReLU activation, in a quantised student too).

A quantised student quantises its activations where role-kd does (reference §B4), at the
:class:`~rolekd.models.sites.ActivationSite` markers (identities at full precision, no parameters):
``act_in`` at every block's input (so the conv and the shortcut both see the quantised tensor), ``act_mid`` after
the block's first conv+BN+ReLU, and ``act_out`` on the pooled classifier's input (which ``quantize_model`` keeps at
full precision unless ``keep_first_last=False``). The ReLUs themselves, the stem's included, stay ReLUs.
"""

from __future__ import annotations

from torch import Tensor, nn

from .registry import register_model
from .sites import ActivationSite


class BasicBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, option: str = "B") -> None:
        super().__init__()
        self.act_in = ActivationSite()  # registered first: registration order then matches execution order
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.relu1 = nn.ReLU(inplace=False)
        self.act_mid = ActivationSite()
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.relu2 = nn.ReLU(inplace=False)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            if option == "A":  # He et al.'s CIFAR ResNets: parameter-free zero-padded shortcut
                self.shortcut = _PadShortcut(out_ch - in_ch, stride)
            else:
                self.shortcut = nn.Sequential(
                    nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch)
                )

    def forward(self, x: Tensor) -> Tensor:
        x = self.act_in(x)
        out = self.act_mid(self.relu1(self.bn1(self.conv1(x))))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class _PadShortcut(nn.Module):
    def __init__(self, extra: int, stride: int) -> None:
        super().__init__()
        self.extra, self.stride = extra, stride

    def forward(self, x: Tensor) -> Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        lo = self.extra // 2
        return nn.functional.pad(x, (0, 0, 0, 0, lo, self.extra - lo))


class CifarResNet(nn.Module):
    """Stem conv (3x3) + stages of BasicBlocks + global average pool + linear classifier."""

    def __init__(
        self,
        blocks: list[int],
        widths: list[int],
        num_classes: int,
        in_channels: int = 3,
        shortcut: str = "B",
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=False)
        in_ch = widths[0]
        self.default_taps: list[str] = []
        for i, (n, w) in enumerate(zip(blocks, widths)):
            stride = 1 if i == 0 else 2
            layers = []
            for j in range(n):
                layers.append(BasicBlock(in_ch, w, stride if j == 0 else 1, shortcut))
                in_ch = w
            self.add_module(f"layer{i + 1}", nn.Sequential(*layers))
            self.default_taps.append(f"layer{i + 1}.{n - 1}")
        self.num_stages = len(blocks)
        self.act_out = ActivationSite()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        for i in range(self.num_stages):
            x = getattr(self, f"layer{i + 1}")(x)
        return self.fc(self.pool(self.act_out(x)).flatten(1))


@register_model("resnet18")
def resnet18(num_classes: int, in_channels: int = 3, width: int = 64) -> CifarResNet:
    """The paper's CIFAR ResNet-18: 4 stages x 2 blocks, 64-512 channels, 1x1 projection shortcuts."""
    return CifarResNet([2, 2, 2, 2], [width, 2 * width, 4 * width, 8 * width], num_classes, in_channels)


@register_model("resnet8")
def resnet8(num_classes: int, in_channels: int = 3, width: int = 64) -> CifarResNet:
    """The paper's shallow student: ResNet-18's widths with 1 block per stage."""
    return CifarResNet([1, 1, 1, 1], [width, 2 * width, 4 * width, 8 * width], num_classes, in_channels)


def _he_resnet(depth: int):
    n = (depth - 2) // 6

    def build(num_classes: int, in_channels: int = 3, width: int = 16) -> CifarResNet:
        return CifarResNet([n, n, n], [width, 2 * width, 4 * width], num_classes, in_channels, shortcut="A")

    build.__doc__ = f"He et al.'s CIFAR ResNet-{depth}: 3 stages x {n} blocks, 16-64 channels."
    return build


for _depth in (20, 32, 56):
    register_model(f"resnet{_depth}")(_he_resnet(_depth))
