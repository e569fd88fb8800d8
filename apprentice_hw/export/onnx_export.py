"""QCDQ ONNX and QONNX export of a Brevitas student, and the ONNX Runtime check.

Both exports use the TorchScript exporter (``dynamo=False``): the dynamo exporter fails on
quantized biases and rewrites global pooling. The QCDQ graph gets a dynamic batch dimension so one
file serves every batch size, and the BatchNorm parameters Brevitas duplicates as graph inputs
are removed (an input shadowing an initializer invites a runtime to expect it as a feed).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn

from apprentice_hw.atomic import atomic_path
from apprentice_hw.brevitas_compat import brevitas_export
from apprentice_hw.output_steps import OutputComparison, compare_outputs

INPUT_NAME = "input"
OUTPUT_NAME = "logits"


def strip_initializer_inputs(model: onnx.ModelProto) -> int:
    """Remove graph inputs that are initializers; return how many were removed."""
    initializers = {init.name for init in model.graph.initializer}
    keep = [inp for inp in model.graph.input if inp.name not in initializers]
    removed = len(model.graph.input) - len(keep)
    del model.graph.input[:]
    model.graph.input.extend(keep)
    return removed


def export_qcdq(student: nn.Module, sample: torch.Tensor, path: Path) -> onnx.ModelProto:
    """Export ``student`` as QCDQ ONNX (QuantizeLinear/Clip/DequantizeLinear) to ``path``."""
    export_onnx_qcdq = brevitas_export().export_onnx_qcdq
    student.eval()
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_onnx_qcdq(
            student,
            sample,
            export_path=str(tmp),
            dynamo=False,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
        )
        model = onnx.load(str(tmp))
        strip_initializer_inputs(model)
        onnx.checker.check_model(model, full_check=True)
        onnx.save(model, str(tmp))
    return model


def export_qonnx_model(student: nn.Module, sample: torch.Tensor, path: Path) -> onnx.ModelProto:
    """Export ``student`` as QONNX (``Quant`` nodes carrying scale, zero point and bit width)."""
    export_qonnx = brevitas_export().export_qonnx
    student.eval()
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_qonnx(student, sample, export_path=str(tmp), dynamo=False)
        model = onnx.load(str(tmp))
    return model


def output_quant_step(model: onnx.ModelProto) -> float:
    """The quantization step (scale) of the graph output, read from its DequantizeLinear.

    Differences between runtimes are reported in these steps: one step is one integer level of
    the output quantizer, the smallest difference two correct integer pipelines can disagree by.
    """
    producers = {out: node for node in model.graph.node for out in node.output}
    node = producers.get(model.graph.output[0].name)
    if node is None or node.op_type != "DequantizeLinear":
        raise ValueError("the model output is not produced by a DequantizeLinear node")
    initializers = {init.name: init for init in model.graph.initializer}
    scale_name = node.input[1]
    if scale_name in initializers:
        return float(numpy_helper.to_array(initializers[scale_name]).reshape(-1)[0])
    constants = {
        out: node for node in model.graph.node if node.op_type == "Constant" for out in node.output
    }
    attr = constants[scale_name].attribute[0]
    return float(numpy_helper.to_array(attr.t).reshape(-1)[0])


def reference_session_options():
    """ONNX Runtime options for a faithful reference run: one thread, no graph optimizations.

    ORT's extended graph optimizations fuse QuantizeLinear/Clip/DequantizeLinear around a Conv
    into its own quantized kernels, and that fusion does not keep the graph's semantics for
    narrow (Clip-limited) ranges: a trained ResNet-small W8A4 student moved by 10 output steps
    against Brevitas (ResNet-20 W4A8: 57) (onnxruntime 1.32.0, measured 2026-11-24). Its
    basic level breaks them too, around fully connected layers: a Brevitas MLP with 2-bit
    ``QuantLinear`` layers and ``QuantReLU`` (a Clip to 0..3 between Quantize and Dequantize)
    was 33 output steps from the torch model with basic optimizations, identical with none
    (2026-12-07). Without optimizations ORT runs the graph node by node, as ONNX defines it.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return options


def run_onnxruntime(model: onnx.ModelProto, inputs: np.ndarray) -> np.ndarray:
    """Outputs of ``model`` on ``inputs`` with ONNX Runtime's CPU provider, as the graph says."""
    import onnxruntime as ort

    session = ort.InferenceSession(
        model.SerializeToString(), reference_session_options(), providers=["CPUExecutionProvider"]
    )
    return session.run(None, {INPUT_NAME: inputs.astype(np.float32)})[0]


def check_with_onnxruntime(
    student: nn.Module, model: onnx.ModelProto, inputs: torch.Tensor
) -> tuple[OutputComparison, np.ndarray, np.ndarray]:
    """Compare the torch student with ONNX Runtime on ``inputs``.

    Returns the comparison, ONNX Runtime's outputs and the student's outputs.
    """
    from apprentice_hw.distill.trainer import predict

    reference = predict(student, inputs).numpy()
    ort_out = run_onnxruntime(model, inputs.numpy())
    return compare_outputs(reference, ort_out, output_quant_step(model)), ort_out, reference
