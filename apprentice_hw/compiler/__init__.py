"""TVM (Relax) compilation of exported ONNX models for the registered hardware targets."""

from apprentice_hw.compiler.memory import MemoryPlan, memory_plan
from apprentice_hw.compiler.runtime import LatencyStats, measure_latency, run_module
from apprentice_hw.compiler.tvm_build import compile_module, export_module, import_onnx

__all__ = [
    "LatencyStats",
    "MemoryPlan",
    "compile_module",
    "export_module",
    "import_onnx",
    "measure_latency",
    "memory_plan",
    "run_module",
]
