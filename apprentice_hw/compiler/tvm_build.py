"""ONNX -> Relax import, integer lowering, compilation for a target, and module export.

The module is compiled for a fixed batch size (1 by default, what an edge device serves): static
shapes let TVM plan all memory ahead of time and give the report exact byte counts.

Every quantized conv2d / dense layer is lowered to an integer kernel with its weights stored at
the trained precision (see ``apprentice_hw.lowering``); layers the lowering cannot take stay
float and are listed, with the reason, in the returned layer records.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from apprentice_hw.atomic import atomic_path
from apprentice_hw.errors import UserError
from apprentice_hw.hardware import Target, find_cross_compiler
from apprentice_hw.lowering import (
    LoweredLayer,
    LoweringOptions,
    canonicalize,
    graph_input,
    lower_to_integer,
)
from apprentice_hw.lowering.channels_last import to_channels_last
from apprentice_hw.lowering.relax_pass import weight_digest

LOWERED_OPS = ("Conv", "Gemm", "MatMul")


@dataclass
class PreparedModule:
    """A Relax module ready to compile, and what the lowering did to each layer."""

    mod: object  # tvm.IRModule
    layers: list[LoweredLayer]
    input_name: str
    input_shape: tuple[int, ...]


def input_shape(model: onnx.ModelProto, batch: int) -> tuple[int, ...]:
    """The model input's shape with the batch dimension set to ``batch``."""
    tensor = graph_input(model)
    dims = tensor.type.tensor_type.shape.dim
    rest = [d.dim_value for d in dims[1:]]
    if not rest or any(d <= 0 for d in rest):
        shown = "x".join(d.dim_param or (str(d.dim_value) if d.dim_value else "?") for d in dims)
        raise UserError(
            f"the model's input '{tensor.name}' has shape {shown or 'unknown'}: apprentice-hw "
            "compiles fixed sizes apart from the batch; export the model with a fixed input "
            "size (e.g. 1x3x224x224)"
        )
    return (batch, *rest)


def import_onnx(model: onnx.ModelProto, batch: int = 1):
    """Import ``model`` as it is (no canonicalization, no lowering): the float reference."""
    import tvm
    from tvm.relax.frontend.onnx import from_onnx

    name = graph_input(model).name
    try:
        return from_onnx(
            model, shape_dict={name: list(input_shape(model, batch))}, keep_params_in_input=False
        )
    except tvm.error.OpNotImplemented as exc:
        missing = str(exc).split(":")[-1].strip()
        raise UserError(
            f"the model uses operators TVM's ONNX importer does not support ({missing}); "
            "export the model without them"
        ) from exc


def layer_names(model: onnx.ModelProto) -> dict[str, str]:
    """Weight digest -> ONNX node name for every Conv/Gemm/MatMul with dequantized weights.

    Names do not survive TVM's import; the integer weights do, so they identify the layer.
    """
    initializers = {init.name: init for init in model.graph.initializer}
    producers = {out: node for node in model.graph.node for out in node.output}
    names: dict[str, str] = {}
    for node in model.graph.node:
        if node.op_type not in LOWERED_OPS or len(node.input) < 2:
            continue
        dequant = producers.get(node.input[1])
        transposed = dequant is not None and dequant.op_type == "Transpose"  # MatMul(x, W^T)
        if transposed:
            dequant = producers.get(dequant.input[0])
        if dequant is None or dequant.op_type != "DequantizeLinear":
            continue
        weights = initializers.get(dequant.input[0])
        if weights is None:
            continue
        values = numpy_helper.to_array(weights).astype(np.int64)
        zero = initializers.get(dequant.input[2]) if len(dequant.input) > 2 else None
        if zero is not None:  # the Relax side keys on the weights minus their zero point
            zeros = numpy_helper.to_array(zero).astype(np.int64)
            if zeros.size > 1:  # per channel, along the DequantizeLinear's axis
                axis = next((a.i for a in dequant.attribute if a.name == "axis"), 1)
                shape = [1] * values.ndim
                shape[axis % values.ndim] = zeros.size
                zeros = zeros.reshape(shape)
            values = values - zeros
        if transposed or (
            node.op_type == "Gemm" and any(a.name == "transB" and a.i for a in node.attribute)
        ):
            pass  # stored (out, in): already output-major
        elif node.op_type in ("Gemm", "MatMul"):
            values = values.T
        names[weight_digest(values)] = node.name or node.output[0]
    return names


def fma_division(target: Target) -> bool:
    """Whether requantization divides by multiply + FMA (``precision.divide_exactly``)."""
    from apprentice_hw.compiler.schedules import has_fused_multiply_add

    return target.device == "cpu" and has_fused_multiply_add(target.tvm_target())


def dot_order(target: Target) -> str:
    """The order of conv weight blocks ``target``'s kernels read: AVX2's int16 pairs or 16x4."""
    if target.device != "cpu":
        return "16x4"
    from apprentice_hw.compiler.schedules import _dot_product

    return "pairs" if _dot_product(target.tvm_target()) == "avx2" else "16x4"


def dot_product_options(target: Target) -> dict[str, bool]:
    """The lowering options that follow from ``target``'s vector instructions: int16 sums
    where proven exact (AVX2 without VNNI; NEON), one product per int16 lane where codes fit
    a signed byte (NEON's ``smlal``), SDOT for every conv layer where the CPU has it, and
    integer requantization lines as ``sqdmulh`` on AArch64."""
    if target.device != "cpu":
        return {}
    from apprentice_hw.compiler.schedules import has_signed_dot, int16_product

    tvm_target = target.tvm_target()
    kind = int16_product(tvm_target)
    return {"int16_sums": kind is not None, "int16_signed_lanes": kind == "neon",
            "signed_dot": has_signed_dot(tvm_target),
            "high_half_multiply": kind == "neon"}  # fmt: skip


def prepare_module(
    model: onnx.ModelProto, target: Target, batch: int = 1, kernel: str | None = None
) -> PreparedModule:
    """Canonicalize, import and lower ``model`` for ``target`` at a fixed ``batch``."""
    canonical = canonicalize(model)
    mod = import_onnx(canonical, batch)
    if target.device == "cpu":  # the CPU kernels' layout; CUDA's dp4a schedule reads NCHW
        mod = to_channels_last(mod)
    options = LoweringOptions(
        preference=target.kernels, forced=kernel, layer_names=layer_names(canonical),
        dot_order=dot_order(target), fma_division=fma_division(target),
        proven_requantization=target.device == "cpu", **dot_product_options(target),
    )  # fmt: skip
    lowered, layers = lower_to_integer(mod, options)
    return PreparedModule(
        lowered, layers, graph_input(canonical).name, input_shape(canonical, batch)
    )


def compile_module(mod, target: Target, use_tuning: bool = True):
    """Compile a Relax module for ``target``: TVM's pipeline plus the project's schedules.

    CPU targets get the default CPU schedules (``schedules.py``), CUDA targets the dp4a conv
    schedule (``gpu_schedules.py``) with DLight for the rest, other devices TVM's defaults.

    On CPUs, functions the target's tuning database (``apprentice-hw tune``) has records for
    get their tuned schedule, conv kernels the shipped tables know get their pre-tuned knobs,
    and the rest the default schedules; ``use_tuning=False`` uses the defaults everywhere.
    """
    import tvm

    from apprentice_hw.compiler import tuning
    from apprentice_hw.compiler.gpu_schedules import cuda_pipeline
    from apprentice_hw.compiler.schedules import cpu_pipeline

    tvm_target = target.tvm_target()
    if target.device == "cuda":
        pipeline = cuda_pipeline(tvm.target.Target(tvm_target))
        return tvm.compile(mod, tvm_target, relax_pipeline=pipeline)
    if target.device != "cpu":
        return tvm.compile(mod, tvm_target)
    tuned, knob_table = None, None
    if use_tuning:
        knob_table = tuning.shipped_knobs(target, tvm_target)
        if tuning.has_records(target):

            def tuned(fused):
                return tuning.apply_records(fused, target, tvm_target)

    pipeline = cpu_pipeline(tvm_target, tuned, knob_table)
    return tvm.compile(mod, tvm_target, relax_pipeline=pipeline)


def export_module(executable, target: Target, path: Path) -> Path:
    """Link ``executable`` into a shared object for ``target`` (cross-linked when needed)."""
    from tvm.support import cc

    from apprentice_hw.compiler import cuda

    compiler = find_cross_compiler(target)
    fcompile = cc.cross_compiler(compiler) if compiler is not None else None
    with atomic_path(path) as tmp:
        # TVM picks the output format from the suffix, so the temporary name must end in .so.
        so_tmp = tmp.with_suffix(".so")
        if target.device == "cuda":
            cuda.export_with_cubin(executable, target.tvm, so_tmp, fcompile)
        else:
            executable.export_library(str(so_tmp), fcompile=fcompile)
        so_tmp.replace(tmp)
    return path
