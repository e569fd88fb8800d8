"""Latency estimated from a target file when the module cannot run here: a roofline per layer.

Each conv / dense layer takes the longer of its compute time (MACs over the target's peak MAC
rate for the layer's precision) and its memory time (weights read plus input and output
activations moved, over the target's memory bandwidth); the model takes the sum. It is a
lower bound of what good kernels reach (no overheads, perfect overlap), always labelled
``estimated``; where the module runs here the report shows the measurement beside it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from apprentice_hw.hardware import Target
from apprentice_hw.report.layers import LayerCost


def rate_key(weight_bits: int, act_bits: int) -> str:
    """The ``peak_macs_per_cycle_per_core`` entry for a layer: fp32, int8, int4 or int2."""
    bits = max(weight_bits, act_bits)
    if bits > 8:
        return "fp32"
    return "int8" if bits > 4 else "int4" if bits > 2 else "int2"


@dataclass(frozen=True)
class LayerEstimate:
    name: str
    compute_ms: float
    memory_ms: float

    @property
    def ms(self) -> float:
        return max(self.compute_ms, self.memory_ms)

    @property
    def bound(self) -> str:
        return "compute" if self.compute_ms >= self.memory_ms else "memory"


def estimate_layer(layer: LayerCost, target: Target, batch: int = 1) -> LayerEstimate:
    macs_per_s = target.peak_gmacs(rate_key(layer.weight_bits, layer.act_bits)) * 1e9
    input_bytes = math.prod(layer.input_shape) * batch * layer.act_bits / 8
    moved = layer.weight_bytes + input_bytes + layer.output_bytes(batch)
    return LayerEstimate(
        layer.name,
        compute_ms=1e3 * layer.macs * batch / macs_per_s,
        memory_ms=1e3 * moved / (target.memory_bandwidth_gbs * 1e9),
    )


@dataclass(frozen=True)
class LatencyEstimate:
    ms: float
    batch: int
    compute_bound_layers: int
    memory_bound_layers: int
    kind: str = "estimated"
    method: str = "roofline per layer from the target file's peak MAC rates and bandwidth"

    def to_dict(self) -> dict:
        return asdict(self)


def estimate_latency(layers: list[LayerCost], target: Target, batch: int = 1) -> LatencyEstimate:
    estimates = [estimate_layer(layer, target, batch) for layer in layers]
    compute = sum(e.bound == "compute" for e in estimates)
    return LatencyEstimate(sum(e.ms for e in estimates), batch, compute, len(estimates) - compute)
