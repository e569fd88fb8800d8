"""Integer lowering of quantized ONNX models: canonical ONNX, Relax pass, kernels, packing."""

from apprentice_hw.lowering.lowered import LoweredLayer, LoweringOptions
from apprentice_hw.lowering.onnx_canonical import canonicalize, graph_input
from apprentice_hw.lowering.relax_pass import lower_to_integer
from apprentice_hw.lowering.strategies import (
    DEFAULT_PREFERENCE,
    KERNEL_STRATEGIES,
    KernelStrategy,
    QuantLayer,
)

__all__ = [
    "DEFAULT_PREFERENCE",
    "KERNEL_STRATEGIES",
    "KernelStrategy",
    "LoweredLayer",
    "LoweringOptions",
    "QuantLayer",
    "canonicalize",
    "graph_input",
    "lower_to_integer",
]
