"""Weight footprint of a trained model at its trained precision, from its parameters.

This is the paper's measure (parameters x bits / 8); the report sets it beside the bytes the
compiled module really carries, so the gap between trained and deployed precision is visible.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
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
    return _footprint(total, quantized, packed_bits, bits_per_layer)


def onnx_weight_footprint(model, layers) -> WeightFootprint:
    """The footprint of a quantized ONNX model that has no Brevitas twin (``compile``).

    Parameters are the initializers a layer computes with: integer weights (what feeds a
    DequantizeLinear) and float tensors read by other nodes (biases, BatchNorm); quantizer
    scales and zero points are not counted. The quantized layers are the lowering's integer
    ones (``layers``), at the bits their integer weights need.
    """
    from onnx import numpy_helper

    sizes = {init.name: int(numpy_helper.to_array(init).size) for init in model.graph.initializer}
    counted: set[str] = set()
    for node in model.graph.node:
        quantizer = node.op_type in ("QuantizeLinear", "DequantizeLinear", "Clip")
        names = node.input[:1] if quantizer else node.input
        counted.update(name for name in names if name in sizes)
    total = sum(sizes[name] for name in counted)
    lowered = [layer for layer in layers if layer.weight_bits is not None]
    quantized = sum(int(np.prod(layer.weight_shape)) for layer in lowered)
    packed_bits = sum(int(np.prod(layer.weight_shape)) * layer.weight_bits for layer in lowered)
    bits_per_layer = {layer.name: int(layer.weight_bits) for layer in lowered}
    return _footprint(max(total, quantized), quantized, packed_bits, bits_per_layer)


def _footprint(total: int, quantized: int, packed_bits: int,
               bits_per_layer: dict[str, int]) -> WeightFootprint:  # fmt: skip
    """``total`` parameters of which ``quantized`` take ``packed_bits`` in all, the rest fp32."""
    return WeightFootprint(
        parameters=total,
        quantized_parameters=quantized,
        fp32_bytes=total * 4,
        quantized_bytes=packed_bits / 8,
        trained_precision_bytes=packed_bits / 8 + (total - quantized) * 4,
        bits_per_layer=bits_per_layer,
    )
