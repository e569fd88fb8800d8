"""Memory numbers read from the compiled Relax module, not from the training graph.

Weights: the bytes of every constant left in the module after TVM's constant folding (what the
deployed ``.so`` carries). Activations: every intermediate tensor's size summed (no reuse), and
the storage TVM's static memory planner actually allocates (``StaticPlanBlockMemory``), which
reuses buffers whose lifetimes do not overlap. The planned number is what a board must have free.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from apprentice_hw.report_model import PlannedActivations

# Byte counts for one module at one batch size: the report's planned-activations record.
MemoryPlan = PlannedActivations


def _dtype_bytes(dtype_str: str) -> int:
    import tvm

    dtype = tvm.DataType(dtype_str)
    return ((dtype.bits + 7) // 8) * dtype.lanes


def _shape_bytes(shape, dtype_str: str) -> int:
    import tvm

    size = 1
    for dim in shape.values:
        if not isinstance(dim, tvm.tirx.IntImm):
            raise ValueError("memory planning needs static shapes; compile with a fixed batch")
        size *= int(dim.value)
    return size * _dtype_bytes(dtype_str)


def _measure(mod) -> tuple[int, int, int, int]:
    """(constant bytes, constant count, unplanned bytes, planned bytes) of a lowered module."""
    from tvm import relax
    from tvm.ir import Op
    from tvm.ir.expr import GenericConst
    from tvm.runtime import Tensor

    builtin_alloc = Op.get("relax.builtin.alloc_tensor")
    memory_alloc_tensor = Op.get("relax.memory.alloc_tensor")
    memory_alloc_storage = Op.get("relax.memory.alloc_storage")
    constants: dict[int, int] = {}
    totals = {"unplanned": 0, "planned": 0}

    def visit(node) -> None:
        if isinstance(node, GenericConst) and isinstance(node.value, Tensor) and node.value.shape:
            # Scalars are operator attributes (scales, zero points), not weights.
            size = int(np.prod(node.value.shape)) * _dtype_bytes(str(node.value.dtype))
            constants[node.__hash__()] = size
        elif isinstance(node, relax.Call):
            if node.op == builtin_alloc:
                size = _shape_bytes(node.args[0], node.args[1].value)
                totals["unplanned"] += size
                totals["planned"] += size
            elif node.op == memory_alloc_tensor:
                totals["unplanned"] += _shape_bytes(node.args[2], node.args[3].value)
            elif node.op == memory_alloc_storage:
                totals["planned"] += int(node.args[0].values[0].value)

    for _, func in mod.functions_items():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func, visit)
    return sum(constants.values()), len(constants), totals["unplanned"], totals["planned"]


# The backend pipeline module per TVM target kind: the passes the build itself runs (CUDA
# builds add the project's conv schedule to TVM's CUDA passes).
BACKEND_PIPELINES = {
    "llvm": "tvm.relax.backend.cpu_generic.pipeline",
    "cuda": "apprentice_hw.compiler.gpu_schedules",
}


def _backend(target):
    import importlib

    return importlib.import_module(BACKEND_PIPELINES[target.tvm["kind"]])


def memory_plan(mod, target, batch: int) -> MemoryPlan:
    """Lower ``mod`` as the build does for its device, up to the static memory plan; count bytes.

    On CUDA targets these are GPU memory: the weights live in device memory and the planned
    activations are device allocations.
    """
    import tvm
    from tvm import relax

    backend = _backend(target)
    tvm_target = target.tvm_target()
    with tvm_target:
        lowered = tvm.transform.Sequential(
            backend.library_dispatch_passes(tvm_target)
            + backend.legalize_passes(tvm_target)
            + backend.dataflow_lower_passes(tvm_target)
            + [relax.transform.StaticPlanBlockMemory()]
        )(mod)
    weight_bytes, weight_count, unplanned, planned = _measure(lowered)
    return MemoryPlan(batch, weight_bytes, weight_count, unplanned, planned)


def kernel_workspace_bytes(mod, target) -> int:
    """The largest scratch memory one kernel allocates while it runs (kernels run one at a time).

    Read from the scheduled TIR functions (the same passes the build runs): the global buffers
    a function allocates for itself, e.g. the conv kernels' padded activations and decoded
    weights. TVM takes them from a workspace pool at run time, outside the Relax memory plan.
    """
    import tvm
    from tvm import tirx

    from apprentice_hw.compiler.schedules import fused_module, schedule_pass

    tvm_target = target.tvm_target()
    with tvm_target:
        if target.tvm["kind"] == "llvm":  # the project's CPU schedules, as cpu_pipeline runs them
            scheduled = schedule_pass(tvm_target)(fused_module(mod, tvm_target))
        else:  # the GPU legalization fuses and schedules (the conv rule, DLight) in one go
            backend = _backend(target)
            scheduled = tvm.transform.Sequential(
                backend.library_dispatch_passes(tvm_target) + backend.legalize_passes(tvm_target)
            )(mod)
    largest = 0
    for _, func in scheduled.functions_items():
        if not isinstance(func, tirx.PrimFunc) or not hasattr(func.body, "block"):
            continue
        total = 0
        for buffer in func.body.block.alloc_buffers:
            if buffer.scope() == "global":
                total += int(np.prod([int(d) for d in buffer.shape])) * _dtype_bytes(
                    str(buffer.dtype)
                )
        largest = max(largest, total)
    return largest


RUNTIME_LIBRARIES = ("libtvm_runtime.so", "libtvm_ffi.so")  # what loading a module needs


def runtime_library_bytes() -> dict[str, int]:
    """Sizes of the TVM runtime libraries a module needs on the device (this machine's build).

    A board installs the same libraries built for its own architecture; their size there is
    similar but not measured here.
    """
    import tvm
    import tvm_ffi

    sizes = {}
    for package in (tvm, tvm_ffi):
        for library in Path(package.__file__).parent.rglob("*.so"):
            if library.name in RUNTIME_LIBRARIES:
                sizes.setdefault(library.name, library.stat().st_size)
    return sizes
