"""Quantizer presets: named, registered Brevitas injectors for weights and activations.

A preset pins down what a bit width *means* in this project. ``--bits 2`` is ternary: Brevitas'
narrow-range signed 2-bit weight quantizer, whose levels are {-1, 0, +1} times a learned
per-tensor scale (the paper's ternary weights). Wider weights are narrow-range signed integers
with a scale from the tensor's maximum; activations after ReLU are unsigned with a learned scale.
"""

from __future__ import annotations

from dataclasses import dataclass

from apprentice_hw.brevitas_compat import brevitas_quant
from apprentice_hw.errors import UserError
from apprentice_hw.registry import Registry


@dataclass(frozen=True)
class WeightPreset:
    """How weights of a given width are quantized."""

    name: str
    bits: int
    levels: str  # human-readable value set, shown by the CLI and reports

    def injector(self) -> type:
        """The Brevitas weight quantizer for this preset."""
        return brevitas_quant().Int8WeightPerTensorFloat.let(bit_width=self.bits)


@dataclass(frozen=True)
class ActPreset:
    """How activations of a given width are quantized (unsigned after ReLU, signed elsewhere)."""

    name: str
    bits: int

    def unsigned(self) -> type:
        return brevitas_quant().Uint8ActPerTensorFloat.let(bit_width=self.bits)

    def signed(self) -> type:
        return brevitas_quant().Int8ActPerTensorFloat.let(bit_width=self.bits)


WEIGHT_PRESETS: Registry[WeightPreset] = Registry("weight quantizer preset")
ACT_PRESETS: Registry[ActPreset] = Registry("activation quantizer preset")

WEIGHT_PRESETS.add("ternary", WeightPreset("ternary", 2, "{-1, 0, +1} x scale"))
WEIGHT_PRESETS.add("int3", WeightPreset("int3", 3, "{-3..3} x scale"))
WEIGHT_PRESETS.add("int4", WeightPreset("int4", 4, "{-7..7} x scale"))
WEIGHT_PRESETS.add("int8", WeightPreset("int8", 8, "{-127..127} x scale"))
for _bits in (2, 4, 8):
    ACT_PRESETS.add(f"uint{_bits}", ActPreset(f"uint{_bits}", _bits))


def weight_preset(bits: int) -> WeightPreset:
    """The preset for ``--bits``; an unsupported width is a user error listing the valid ones."""
    by_bits = {WEIGHT_PRESETS.get(n).bits: WEIGHT_PRESETS.get(n) for n in WEIGHT_PRESETS}
    if bits not in by_bits:
        valid = ", ".join(f"{b} ({p.name})" for b, p in sorted(by_bits.items()))
        raise UserError(f"weight bits {bits} are not supported; use one of {valid}")
    return by_bits[bits]


def act_preset(bits: int) -> ActPreset:
    """The preset for ``--act-bits``."""
    by_bits = {ACT_PRESETS.get(n).bits: ACT_PRESETS.get(n) for n in ACT_PRESETS}
    if bits not in by_bits:
        valid = ", ".join(str(b) for b in sorted(by_bits))
        raise UserError(f"activation bits {bits} are not supported; use one of {valid}")
    return by_bits[bits]
