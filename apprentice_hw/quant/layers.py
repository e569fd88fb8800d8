"""Layer factories: one network definition, built either in fp32 or as a Brevitas student.

Models ask a factory for their layers instead of naming ``nn.Conv2d`` or ``QuantConv2d``, so the
teacher and the student share one definition and the same state-dict keys (scheme C copies the
teacher's weights into the student by name).

Quantized activations are returned as plain (dequantized) tensors: the QCDQ export still places a
Quantize/Dequantize pair at every quantizer, and BatchNorm and pooling need no QuantTensor
support. Edge layers (the first convolution and the classifier) can keep a wider weight preset:
the paper reports both policies, and an fp32/8-bit edge is a first-order term in the footprint.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from torch import nn

from apprentice_hw.brevitas_compat import brevitas_nn
from apprentice_hw.quant.presets import (
    ActPreset,
    WeightPreset,
    act_preset,
    weight_preset,
)


class LayerFactory(Protocol):
    """What a model needs to build itself in either precision."""

    def input_quant(self) -> nn.Module: ...
    def conv(
        self, cin: int, cout: int, kernel: int, stride: int, edge: bool = False
    ) -> nn.Module: ...
    def relu(self) -> nn.Module: ...
    def residual_quant(self) -> nn.Module: ...
    def head_quant(self) -> nn.Module: ...
    def linear(self, cin: int, cout: int, edge: bool = True) -> nn.Module: ...
    def output_quant(self) -> nn.Module: ...


class FloatLayers:
    """Plain fp32 PyTorch layers (the teacher)."""

    def input_quant(self) -> nn.Module:
        return nn.Identity()

    def conv(self, cin: int, cout: int, kernel: int, stride: int, edge: bool = False) -> nn.Module:
        return nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False)

    def relu(self) -> nn.Module:
        return nn.ReLU(inplace=False)

    def residual_quant(self) -> nn.Module:
        return nn.Identity()

    def head_quant(self) -> nn.Module:
        return nn.Identity()

    def linear(self, cin: int, cout: int, edge: bool = True) -> nn.Module:
        return nn.Linear(cin, cout)

    def output_quant(self) -> nn.Module:
        return nn.Identity()


@dataclass(frozen=True)
class QuantLayers:
    """Brevitas layers at the given weight and activation presets.

    ``edge_weight`` is the preset of the first and last layers; ``None`` keeps them at the body's
    precision. Inputs, the pooled features and the logits are quantized to 8 bits so every tensor
    that crosses a layer boundary in the exported graph has an integer representation.
    """

    weight: WeightPreset
    act: ActPreset
    edge_weight: WeightPreset | None

    @classmethod
    def from_bits(
        cls, weight_bits: int, act_bits: int, edge_bits: int | None, family: str
    ) -> QuantLayers:
        """Layers for ``weight_bits``/``act_bits`` in quantizer ``family`` (edge: first/last)."""
        edge = None if edge_bits is None else weight_preset(edge_bits, family)
        return cls(weight_preset(weight_bits, family), act_preset(act_bits, family), edge)

    @classmethod
    def for_recipe(cls, recipe) -> QuantLayers:
        """The student's layers for a ``config.Recipe``; unknown widths or families raise a
        UserError."""
        return cls.from_bits(
            recipe.weight_bits, recipe.act_bits, recipe.first_last_bits, recipe.quant
        )

    def _edge_act(self) -> ActPreset:
        """8-bit activations of the same family for the input, pooled features and logits."""
        return act_preset(8, self.act.family.name)

    def _weight_quant(self, edge: bool) -> type:
        preset = self.edge_weight if edge and self.edge_weight is not None else self.weight
        return preset.injector()

    def input_quant(self) -> nn.Module:
        return brevitas_nn().QuantIdentity(act_quant=self._edge_act().unsigned())

    def conv(self, cin: int, cout: int, kernel: int, stride: int, edge: bool = False) -> nn.Module:
        return brevitas_nn().QuantConv2d(
            cin,
            cout,
            kernel,
            stride=stride,
            padding=kernel // 2,
            bias=False,
            weight_quant=self._weight_quant(edge),
        )

    def relu(self) -> nn.Module:
        return brevitas_nn().QuantReLU(act_quant=self.act.unsigned())

    def residual_quant(self) -> nn.Module:
        return brevitas_nn().QuantIdentity(act_quant=self.act.signed())

    def head_quant(self) -> nn.Module:
        return brevitas_nn().QuantIdentity(act_quant=self._edge_act().unsigned())

    def linear(self, cin: int, cout: int, edge: bool = True) -> nn.Module:
        return brevitas_nn().QuantLinear(
            cin, cout, bias=True, weight_quant=self._weight_quant(edge)
        )

    def output_quant(self) -> nn.Module:
        return brevitas_nn().QuantIdentity(act_quant=self._edge_act().signed())
