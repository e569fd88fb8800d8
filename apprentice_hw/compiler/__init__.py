"""TVM (Relax) compilation of exported ONNX models for the registered hardware targets."""

from apprentice_hw.compiler.memory import MemoryPlan, memory_plan
from apprentice_hw.compiler.runtime import LatencyStats, measure_latency, run_module
from apprentice_hw.compiler.tvm_build import (
    PreparedModule,
    compile_module,
    export_module,
    import_onnx,
    prepare_module,
)

__all__ = [
    "LatencyStats",
    "MemoryPlan",
    "PreparedModule",
    "compile_module",
    "export_module",
    "import_onnx",
    "measure_latency",
    "memory_plan",
    "prepare_module",
    "run_module",
]
