"""Small ResNets for low-resolution inputs (8x8 digits, 28x28 Fashion-MNIST).

The structure follows the CIFAR ResNets of He et al.: a 3x3 stem, stages of basic blocks that
halve the resolution and double the width, global average pooling and a linear classifier. In
the quantized student both inputs of every residual add go through the *same* quantizer instance,
so the two branches share one scale and the exported add is a valid integer add.
"""

from __future__ import annotations

import torch
from torch import nn

from apprentice_hw.models.base import MODELS
from apprentice_hw.quant.layers import LayerFactory


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a (possibly projected) identity shortcut."""

    def __init__(self, layers: LayerFactory, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = layers.conv(cin, cout, 3, stride)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = layers.relu()
        self.conv2 = layers.conv(cout, cout, 3, 1)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample: nn.Module | None = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(layers.conv(cin, cout, 1, stride), nn.BatchNorm2d(cout))
        self.residual_quant = layers.residual_quant()
        self.relu2 = layers.relu()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(self.residual_quant(out) + self.residual_quant(shortcut))


class SmallResNet(nn.Module):
    """Stem, ``len(blocks)`` stages of basic blocks, global pooling, classifier."""

    def __init__(
        self,
        layers: LayerFactory,
        in_channels: int,
        num_classes: int,
        width: int,
        blocks: tuple[int, ...],
    ) -> None:
        super().__init__()
        self.input_quant = layers.input_quant()
        self.conv1 = layers.conv(in_channels, width, 3, 1, edge=True)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = layers.relu()
        stages: list[nn.Module] = []
        cin = width
        for index, count in enumerate(blocks):
            cout = width * 2**index
            stride = 1 if index == 0 else 2
            stage = [BasicBlock(layers, cin, cout, stride)]
            stage += [BasicBlock(layers, cout, cout, 1) for _ in range(count - 1)]
            stages.append(nn.Sequential(*stage))
            cin = cout
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head_quant = layers.head_quant()
        self.fc = layers.linear(cin, num_classes, edge=True)
        self.output_quant = layers.output_quant()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(self.input_quant(x))))
        x = self.pool(self.stages(x))
        x = self.head_quant(torch.flatten(x, 1))
        return self.output_quant(self.fc(x))


@MODELS.register("resnet-small")
def resnet_small(
    layers: LayerFactory,
    in_channels: int,
    num_classes: int,
    width: int = 16,
    blocks: list[int] | tuple[int, ...] = (1, 1),
) -> nn.Module:
    """A small ResNet; ``width`` channels in the first stage, ``blocks`` blocks per stage."""
    if width < 1 or not blocks or min(blocks) < 1:
        raise ValueError("width and every stage's block count must be positive")
    return SmallResNet(layers, in_channels, num_classes, width, tuple(blocks))


CIFAR_DEPTHS = {20: 3, 32: 5, 44: 7, 56: 9, 110: 18}


def _register_cifar(depth: int, blocks_per_stage: int) -> None:
    def builder(layers: LayerFactory, in_channels: int, num_classes: int, width: int = 16):
        """CIFAR ResNet (He et al. 2016): 3 stages of ``blocks_per_stage`` basic blocks."""
        return SmallResNet(layers, in_channels, num_classes, width, (blocks_per_stage,) * 3)

    MODELS.add(f"resnet{depth}", builder)


for _depth, _blocks in CIFAR_DEPTHS.items():
    _register_cifar(_depth, _blocks)
