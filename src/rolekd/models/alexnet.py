"""The CIFAR AlexNet used by role-kd (reference §B3): five convolutions with BatchNorm, three FC layers."""

from __future__ import annotations

from torch import Tensor, nn

from .registry import register_model


def _conv(in_ch: int, out_ch: int, k: int, pad: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, k, 1, pad, bias=False), nn.BatchNorm2d(out_ch), nn.ReLU())


class CifarAlexNet(nn.Module):
    def __init__(self, num_classes: int, in_channels: int = 3, image_size: int = 32) -> None:
        super().__init__()
        # pad 5 then an 11x11 VALID conv keeps 32x32, as in role-kd
        self.conv1 = _conv(in_channels, 64, 11, 5)
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = _conv(64, 192, 5, 2)
        self.pool2 = nn.MaxPool2d(2)
        self.conv3 = _conv(192, 384, 3, 1)
        self.conv4 = _conv(384, 256, 3, 1)
        self.conv5 = _conv(256, 256, 3, 1)
        self.pool5 = nn.MaxPool2d(2)
        side = image_size // 8
        self.fc0 = nn.Sequential(nn.Linear(256 * side * side, 4096, bias=False), nn.BatchNorm1d(4096), nn.ReLU())
        self.fc1 = nn.Sequential(nn.Linear(4096, 4096, bias=False), nn.BatchNorm1d(4096), nn.ReLU())
        self.fc = nn.Linear(4096, num_classes)
        # after pool2 (8x8x192), conv3 (8x8x384), conv4 (8x8x256), conv5+pool (4x4x256)
        self.default_taps = ["pool2", "conv3", "conv4", "pool5"]

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool2(self.conv2(self.pool1(self.conv1(x))))
        x = self.pool5(self.conv5(self.conv4(self.conv3(x))))
        return self.fc(self.fc1(self.fc0(x.flatten(1))))


@register_model("alexnet")
def alexnet(num_classes: int, in_channels: int = 3, image_size: int = 32) -> CifarAlexNet:
    return CifarAlexNet(num_classes, in_channels, image_size)
