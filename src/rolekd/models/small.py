"""Small networks for toy experiments and fast tests."""

from __future__ import annotations

from torch import Tensor, nn

from .registry import register_model


class SmallCNN(nn.Module):
    """Three conv-BN-ReLU-pool stages and a linear head; taps after each stage."""

    def __init__(self, num_classes: int, in_channels: int = 3, width: int = 16) -> None:
        super().__init__()
        chans = [in_channels, width, 2 * width, 4 * width]
        for i in range(3):
            stage = nn.Sequential(
                nn.Conv2d(chans[i], chans[i + 1], 3, 1, 1, bias=False),
                nn.BatchNorm2d(chans[i + 1]),
                nn.ReLU(),
                nn.MaxPool2d(2),
            )
            self.add_module(f"stage{i + 1}", stage)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(chans[-1], num_classes)
        self.default_taps = ["stage1", "stage2", "stage3"]

    def forward(self, x: Tensor) -> Tensor:
        x = self.stage3(self.stage2(self.stage1(x)))
        return self.fc(self.pool(x).flatten(1))


class MLP(nn.Module):
    """Flatten + hidden layers; has no spatial inductive bias (HARD's shift-equivariance toy)."""

    def __init__(self, num_classes: int, in_channels: int = 3, image_size: int = 32, hidden: int = 256, depth: int = 2) -> None:
        super().__init__()
        dims = [in_channels * image_size * image_size] + [hidden] * depth
        layers: list[nn.Module] = [nn.Flatten()]
        for i in range(depth):
            layers += [nn.Linear(dims[i], dims[i + 1]), nn.ReLU()]
        self.body = nn.Sequential(*layers)
        self.fc = nn.Linear(dims[-1], num_classes)
        self.default_taps = [f"body.{2 * (i + 1)}" for i in range(depth)]

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.body(x))


@register_model("cnn")
def cnn(num_classes: int, in_channels: int = 3, width: int = 16) -> SmallCNN:
    return SmallCNN(num_classes, in_channels, width)


@register_model("mlp")
def mlp(num_classes: int, in_channels: int = 3, image_size: int = 32, hidden: int = 256, depth: int = 2) -> MLP:
    return MLP(num_classes, in_channels, image_size, hidden, depth)
