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
from apprentice_hw.lowering import (
    LoweredLayer,
    LoweringOptions,
    canonicalize,
    graph_input,
    lower_to_integer,
)
from apprentice_hw.lowering.channels_last import to_channels_last
from apprentice_hw.lowering.lowered import weight_digest

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


def prepare(
    model: onnx.ModelProto,
    batch: int,
    *,
    preference: tuple[str, ...],
    kernel: str | None,
    channels_last: bool,
    lowering: dict | None = None,
) -> PreparedModule:
    """Canonicalize, import and lower ``model`` at a fixed ``batch``.

    The device backend (``apprentice_hw.backends``) decides the layout and the lowering options
    that follow from its instructions; this function only applies them.
    """
    canonical = canonicalize(model)
    mod = import_onnx(canonical, batch)
    if channels_last:
        mod = to_channels_last(mod)
    options = LoweringOptions(
        preference=preference, forced=kernel, layer_names=layer_names(canonical),
        **(lowering or {}),
    )  # fmt: skip
    lowered, layers = lower_to_integer(mod, options)
    return PreparedModule(
        lowered, layers, graph_input(canonical).name, input_shape(canonical, batch)
    )


def link_library(executable, path: Path, cross_compiler: str | None,
                 export=None) -> Path:  # fmt: skip
    """Link ``executable`` into a shared object at ``path`` (atomically), cross-linked with
    ``cross_compiler`` when given. ``export(executable, so_path, fcompile)`` replaces TVM's
    ``export_library`` where a device embeds code of its own (CUDA's cubins)."""
    from tvm.support import cc

    fcompile = cc.cross_compiler(cross_compiler) if cross_compiler is not None else None
    with atomic_path(path) as tmp:
        # TVM picks the output format from the suffix, so the temporary name must end in .so.
        so_tmp = tmp.with_suffix(".so")
        if export is not None:
            export(executable, so_tmp, fcompile)
        else:
            executable.export_library(str(so_tmp), fcompile=fcompile)
        so_tmp.replace(tmp)
    return path
