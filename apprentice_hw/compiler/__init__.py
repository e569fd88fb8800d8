"""TVM (Relax) compilation of exported ONNX models: import, lowering, schedules, memory plans
and the runtime. Which device a model is compiled for is the backends' business
(``apprentice_hw.backends``: ``prepare_module``, ``compile_module``, ``export_module``)."""

from apprentice_hw.compiler.memory import MemoryPlan, memory_plan
from apprentice_hw.compiler.runtime import LatencyStats, measure_latency, run_module
from apprentice_hw.compiler.tvm_build import PreparedModule, import_onnx

__all__ = [
    "LatencyStats",
    "MemoryPlan",
    "PreparedModule",
    "import_onnx",
    "measure_latency",
    "memory_plan",
    "run_module",
]
