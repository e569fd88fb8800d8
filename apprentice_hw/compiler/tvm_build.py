"""ONNX -> Relax import, compilation for a target, and export of a deployable shared object.

The module is compiled for a fixed batch size (1 by default, what an edge device serves): static
shapes let TVM plan all memory ahead of time and give the report exact byte counts.

In this version the quantized graph is executed as float fake-quant (TVM's ONNX importer computes
QuantizeLinear/DequantizeLinear in float); integer lowering with packed weights replaces it later.
"""

from __future__ import annotations

from pathlib import Path

import onnx

from apprentice_hw.atomic import atomic_path
from apprentice_hw.export.onnx_export import INPUT_NAME
from apprentice_hw.hardware import Target, find_cross_compiler


def import_onnx(model: onnx.ModelProto, batch: int = 1):
    """Import ``model`` into a Relax IRModule with the input's batch dimension fixed."""
    from tvm.relax.frontend.onnx import from_onnx

    input_info = next(i for i in model.graph.input if i.name == INPUT_NAME)
    dims = [d.dim_value for d in input_info.type.tensor_type.shape.dim]
    shape = [batch, *dims[1:]]
    return from_onnx(model, shape_dict={INPUT_NAME: shape}, keep_params_in_input=False)


def compile_module(mod, target: Target):
    """Compile a Relax module for ``target`` with TVM's default pipeline for its device."""
    import tvm

    return tvm.compile(mod, target.tvm_target())


def export_module(executable, target: Target, path: Path) -> Path:
    """Link ``executable`` into a shared object for ``target`` (cross-linked when needed)."""
    from tvm.support import cc

    compiler = find_cross_compiler(target)
    with atomic_path(path) as tmp:
        # TVM picks the output format from the suffix, so the temporary name must end in .so.
        so_tmp = tmp.with_suffix(".so")
        if compiler is None:
            executable.export_library(str(so_tmp))
        else:
            executable.export_library(str(so_tmp), fcompile=cc.cross_compiler(compiler))
        so_tmp.replace(tmp)
    return path
