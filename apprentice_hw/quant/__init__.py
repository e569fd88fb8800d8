"""Quantizer presets (a registry of Brevitas injectors) and the layer factories that use them."""

from apprentice_hw.quant.layers import FloatLayers, LayerFactory, QuantLayers
from apprentice_hw.quant.presets import (
    ACT_PRESETS,
    WEIGHT_PRESETS,
    ActPreset,
    WeightPreset,
    act_preset,
    weight_preset,
)

__all__ = [
    "ACT_PRESETS",
    "WEIGHT_PRESETS",
    "ActPreset",
    "FloatLayers",
    "LayerFactory",
    "QuantLayers",
    "WeightPreset",
    "act_preset",
    "weight_preset",
]
