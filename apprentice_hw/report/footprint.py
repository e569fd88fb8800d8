"""Weight footprint of a trained model at its trained precision, from its parameters.

This is the paper's measure (parameters x bits / 8); the report sets it beside the bytes the
compiled module really carries, so the gap between trained and deployed precision is visible.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from torch import nn


@dataclass(frozen=True)
class WeightFootprint:
    """Parameter counts and bytes of a model."""

    parameters: int
    quantized_parameters: int
    fp32_bytes: int  # every parameter as fp32
    quantized_bytes: float  # the quantized layers' weights only, at their bit width
    trained_precision_bytes: float  # quantized weights at their bit width, the rest as fp32
    bits_per_layer: dict[str, int]

    def to_dict(self) -> dict:
        return asdict(self)


def _weight_bit_width(module: nn.Module) -> int | None:
    """The weight bit width of a Brevitas layer, or None for a float layer."""
    proxy = getattr(module, "weight_quant", None)
    if proxy is None or not getattr(proxy, "is_quant_enabled", False):
        return None
    return int(proxy.bit_width())


def weight_footprint(model: nn.Module) -> WeightFootprint:
    """Count ``model``'s parameters and their bytes at the precision they were trained in."""
    total = sum(p.numel() for p in model.parameters())
    quantized = 0
    packed_bits = 0
    bits_per_layer: dict[str, int] = {}
    for name, module in model.named_modules():
        bits = _weight_bit_width(module)
        if bits is None:
            continue
        count = module.weight.numel()
        quantized += count
        packed_bits += count * bits
        bits_per_layer[name] = bits
    return WeightFootprint(
        parameters=total,
        quantized_parameters=quantized,
        fp32_bytes=total * 4,
        quantized_bytes=packed_bits / 8,
        trained_precision_bytes=packed_bits / 8 + (total - quantized) * 4,
        bits_per_layer=bits_per_layer,
    )
