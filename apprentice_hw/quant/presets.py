"""Quantizer presets: registered families of Brevitas injectors, instantiated per bit width.

A family fixes *how* a tensor is scaled; the bit width says how many levels it gets. Every family
uses narrow-range signed weights, so ``--bits 2`` is ternary: {-1, 0, +1} x scale, the paper's
ternary networks, and k bits give the symmetric levels {-(2^(k-1)-1) .. 2^(k-1)-1} x scale.

Families:

- ``float``: per-tensor float scales; weights from the tensor's maximum (ternary weights from its
  mean magnitude, see below), activations learned (initialized by calibration). The default.
- ``per-channel``: like ``float`` but one weight scale per output channel.
- ``po2``: power-of-two scales everywhere (Brevitas fixed point), so a fixed-point pipeline such
  as an hls4ml FPGA build reproduces the model bit-exactly.
- ``wrpn``: the fixed ranges of WRPN (Mishra et al.): weights clipped to [-1, 1] with levels
  ``round((2^(k-1)-1) w) / (2^(k-1)-1)``, ReLU outputs clipped to [0, 1] with levels
  ``round((2^k-1) x) / (2^k-1)``. Nothing is learned about the range. Residual adds, which WRPN
  did not have, use a learned signed scale.

Ternary weights in the float families are scaled by the mean magnitude of the tensor, not its
maximum: the rounding threshold then sits at half the mean magnitude, close to the TWN rule
(0.7 x mean |w|). With the maximum, the threshold is max/2 and most weights of a trained fp32
tensor (peaked around zero) round to 0; ternary scheme C, which starts from such weights, lost
19 points of Fashion-MNIST top-1 that way (benchmarks/distill.py: 64.1% against 83.5%).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from apprentice_hw.brevitas_compat import brevitas_quant
from apprentice_hw.errors import UserError
from apprentice_hw.registry import Registry

WEIGHT_BITS = (2, 3, 4, 8)
ACT_BITS = (2, 4, 8)
DEFAULT_FAMILY = "float"

Injector = type


def _stats_weight(base: Injector, bits: int) -> Injector:
    """Weights scaled from statistics: the maximum, or the mean magnitude when ternary."""
    if bits == 2:
        from brevitas.inject.enum import StatsOp

        return base.let(bit_width=bits, scaling_stats_op=StatsOp.AVE)
    return base.let(bit_width=bits)


def _const_range(base: Injector, bits: int, threshold: float) -> Injector:
    from brevitas.inject.enum import ScalingImplType

    return base.let(bit_width=bits, scaling_impl_type=ScalingImplType.CONST, scaling_init=threshold)


@dataclass(frozen=True)
class QuantFamily:
    """How weights and activations of any bit width are scaled."""

    name: str
    description: str
    weight: Callable[[int], Injector]
    act_unsigned: Callable[[int], Injector]
    act_signed: Callable[[int], Injector]


QUANT_FAMILIES: Registry[QuantFamily] = Registry("quantizer family")


def _q():
    return brevitas_quant()


QUANT_FAMILIES.add(
    "float",
    QuantFamily(
        "float",
        "per-tensor float scales (weights: max; activations: learned)",
        weight=lambda b: _stats_weight(_q().Int8WeightPerTensorFloat, b),
        act_unsigned=lambda b: _q().Uint8ActPerTensorFloat.let(bit_width=b),
        act_signed=lambda b: _q().Int8ActPerTensorFloat.let(bit_width=b),
    ),
)
QUANT_FAMILIES.add(
    "per-channel",
    QuantFamily(
        "per-channel",
        "per-output-channel float weight scales, per-tensor learned activation scales",
        weight=lambda b: _stats_weight(_q().Int8WeightPerChannelFloat, b),
        act_unsigned=lambda b: _q().Uint8ActPerTensorFloat.let(bit_width=b),
        act_signed=lambda b: _q().Int8ActPerTensorFloat.let(bit_width=b),
    ),
)
QUANT_FAMILIES.add(
    "po2",
    QuantFamily(
        "po2",
        "power-of-two scales everywhere (bit-exact in fixed-point hardware, e.g. FPGAs)",
        weight=lambda b: _q().Int8WeightPerTensorFixedPoint.let(bit_width=b),
        act_unsigned=lambda b: _q().Uint8ActPerTensorFixedPoint.let(bit_width=b),
        act_signed=lambda b: _q().Int8ActPerTensorFixedPoint.let(bit_width=b),
    ),
)
QUANT_FAMILIES.add(
    "wrpn",
    QuantFamily(
        "wrpn",
        "WRPN fixed ranges: weights in [-1, 1], ReLU outputs in [0, 1]",
        weight=lambda b: _const_range(_q().Int8WeightPerTensorFloat, b, 1.0),
        act_unsigned=lambda b: _const_range(_q().Uint8ActPerTensorFloat, b, 1.0),
        act_signed=lambda b: _q().Int8ActPerTensorFloat.let(bit_width=b),
    ),
)


def weight_levels(bits: int) -> str:
    """The integer levels of narrow-range signed ``bits``-bit weights, for people."""
    if bits == 2:
        return "ternary {-1, 0, +1} x scale"
    top = 2 ** (bits - 1) - 1
    return f"{{-{top}..{top}}} x scale"


@dataclass(frozen=True)
class WeightPreset:
    """Weights of one bit width in one family."""

    bits: int
    family: QuantFamily

    @property
    def name(self) -> str:
        return f"{self.family.name}-w{self.bits}"

    @property
    def levels(self) -> str:
        return weight_levels(self.bits)

    def injector(self) -> Injector:
        return self.family.weight(self.bits)


@dataclass(frozen=True)
class ActPreset:
    """Activations of one bit width in one family (unsigned after ReLU, signed elsewhere)."""

    bits: int
    family: QuantFamily

    @property
    def name(self) -> str:
        return f"{self.family.name}-a{self.bits}"

    def unsigned(self) -> Injector:
        return self.family.act_unsigned(self.bits)

    def signed(self) -> Injector:
        return self.family.act_signed(self.bits)


def weight_preset(bits: int, family: str = DEFAULT_FAMILY) -> WeightPreset:
    """The preset for ``--bits``; an unsupported width is a user error listing the valid ones."""
    if bits not in WEIGHT_BITS:
        valid = ", ".join(f"{b} (ternary)" if b == 2 else str(b) for b in WEIGHT_BITS)
        raise UserError(f"weight bits {bits} are not supported; use one of {valid}")
    return WeightPreset(bits, QUANT_FAMILIES.get(family))


def act_preset(bits: int, family: str = DEFAULT_FAMILY) -> ActPreset:
    """The preset for ``--act-bits``."""
    if bits not in ACT_BITS:
        valid = ", ".join(str(b) for b in ACT_BITS)
        raise UserError(f"activation bits {bits} are not supported; use one of {valid}")
    return ActPreset(bits, QUANT_FAMILIES.get(family))
