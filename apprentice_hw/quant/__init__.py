"""Quantizer presets (a registry of Brevitas injector families) and the layer factories."""

from apprentice_hw.quant.layers import FloatLayers, LayerFactory, QuantLayers
from apprentice_hw.quant.presets import (
    ACT_BITS,
    DEFAULT_FAMILY,
    QUANT_FAMILIES,
    WEIGHT_BITS,
    ActPreset,
    QuantFamily,
    WeightPreset,
    act_preset,
    weight_preset,
)

__all__ = [
    "ACT_BITS",
    "DEFAULT_FAMILY",
    "QUANT_FAMILIES",
    "WEIGHT_BITS",
    "ActPreset",
    "FloatLayers",
    "LayerFactory",
    "QuantFamily",
    "QuantLayers",
    "WeightPreset",
    "act_preset",
    "weight_preset",
]
