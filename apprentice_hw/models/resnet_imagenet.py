"""ImageNet ResNet-18/34/50 (v1.5) with torchvision's module names.

The fp32 variants have exactly the state-dict keys of ``torchvision.models.resnet18/34/50``, so a
torchvision checkpoint loads into the teacher (and, for scheme C, into the student) by name. The
quantized variants add only quantizer parameters (activation scales) to those keys.
"""

from __future__ import annotations

import torch
from torch import nn

from apprentice_hw.models.base import MODELS
from apprentice_hw.models.resnet_small import BasicBlock
from apprentice_hw.quant.layers import LayerFactory


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carrying the stride, as in v1.5), 1x1 expand by 4, plus shortcut."""

    expansion = 4

    def __init__(self, layers: LayerFactory, cin: int, planes: int, stride: int) -> None:
        super().__init__()
        cout = planes * self.expansion
        self.conv1 = layers.conv(cin, planes, 1, 1)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = layers.relu()
        self.conv2 = layers.conv(planes, planes, 3, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = layers.relu()
        self.conv3 = layers.conv(planes, cout, 1, 1)
        self.bn3 = nn.BatchNorm2d(cout)
        self.downsample: nn.Module | None = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(layers.conv(cin, cout, 1, stride), nn.BatchNorm2d(cout))
        self.residual_quant = layers.residual_quant()
        self.relu3 = layers.relu()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.relu2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu3(self.residual_quant(out) + self.residual_quant(shortcut))


class ImageNetResNet(nn.Module):
    """7x7/2 stem, 3x3/2 max pooling, four stages (layer1..layer4), pooling, classifier."""

    def __init__(
        self,
        layers: LayerFactory,
        in_channels: int,
        num_classes: int,
        bottleneck: bool,
        blocks: tuple[int, int, int, int],
        width: int = 64,
    ) -> None:
        super().__init__()
        self.input_quant = layers.input_quant()
        self.conv1 = layers.conv(in_channels, width, 7, 2, edge=True)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = layers.relu()
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        cin = width
        for index, count in enumerate(blocks):
            planes = width * 2**index
            stride = 1 if index == 0 else 2
            stage: list[nn.Module] = []
            for block_index in range(count):
                if bottleneck:
                    block = Bottleneck(layers, cin, planes, stride if block_index == 0 else 1)
                    cin = planes * Bottleneck.expansion
                else:
                    block = BasicBlock(layers, cin, planes, stride if block_index == 0 else 1)
                    cin = planes
                stage.append(block)
            setattr(self, f"layer{index + 1}", nn.Sequential(*stage))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.head_quant = layers.head_quant()
        self.fc = layers.linear(cin, num_classes, edge=True)
        self.output_quant = layers.output_quant()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(self.input_quant(x)))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.head_quant(torch.flatten(self.avgpool(x), 1))
        return self.output_quant(self.fc(x))


IMAGENET_CONFIGS = {
    "resnet18": (False, (2, 2, 2, 2)),
    "resnet34": (False, (3, 4, 6, 3)),
    "resnet50": (True, (3, 4, 6, 3)),
}


def _register(name: str, bottleneck: bool, blocks: tuple[int, int, int, int]) -> None:
    def builder(layers: LayerFactory, in_channels: int, num_classes: int, width: int = 64):
        return ImageNetResNet(layers, in_channels, num_classes, bottleneck, blocks, width)

    builder.__doc__ = f"ImageNet {name} (v1.5), torchvision-compatible parameter names."
    MODELS.add(name, builder)


for _name, (_bottleneck, _blocks) in IMAGENET_CONFIGS.items():
    _register(_name, _bottleneck, _blocks)
