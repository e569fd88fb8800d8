"""hls4ml C simulation of a student, with the global-average-pooling head run on the host.

hls4ml 1.3.0 cannot take the ResNet head: after qonnx's channels-last conversion the
GlobalAveragePool still wants NCHW, so a Transpose stays in front of it, and the io_stream
C simulation of that Transpose dies with an illegal instruction (measured 2026-11-25). The
split used here: the FPGA computes everything up to the last activation quantizer before the
pooling (all convolutions, the residual adds, every quantizer), the host computes the head
(average pool, classifier, output quantizer; 10 x C MACs) with ONNX Runtime on the QCDQ
export's own head. The logits then equal ONNX Runtime's on the whole model exactly, provided
the FPGA part is exact: with power-of-two scales and 64-bit fixed point for the intermediate
results it was, on 100 of 100 digits images, where the default fixed<32,16> was not (batch
norm coefficients rounded; one activation step off).
"""

from __future__ import annotations

import contextlib
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

HLS_PRECISION = "fixed<64,32>"  # wide enough that batch norm and the adds round exactly
HLS_BACKEND = "Vitis"
IO_TYPE = "io_stream"
HEAD_START = "GlobalAveragePool"


@dataclass
class SplitModel:
    """The FPGA body (QONNX, channels last) and the host head (QCDQ ONNX; None: no head)."""

    body: object  # qonnx ModelWrapper
    head: onnx.ModelProto | None
    body_shape_nhwc: tuple[int, ...]

    @property
    def head_layers(self) -> set[str]:
        """Names of the QCDQ nodes the host computes."""
        return {node.name for node in self.head.graph.node} if self.head is not None else set()


def _channels_last(qonnx_path: Path):
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.channels_last import ConvertToChannelsLastAndClean
    from qonnx.transformation.gemm_to_matmul import GemmToMatMul
    from qonnx.util.cleanup import cleanup_model

    model = cleanup_model(ModelWrapper(str(qonnx_path)))
    model = model.transform(ConvertToChannelsLastAndClean())
    with warnings.catch_warnings():
        # "only offers explicit support for version 9 of the Gemm node": our opset-20 Gemm is
        # the plain one (no broadcasting tricks); the C simulation check would catch a mistake.
        warnings.filterwarnings("ignore", message=".*GemmToMatMul.*", category=UserWarning)
        model = model.transform(GemmToMatMul())
    return cleanup_model(model)


def _body(model):
    """``model`` cut before the Transpose that feeds its GlobalAveragePool."""
    from qonnx.util.cleanup import cleanup_model

    graph = model.graph
    pool = next((n for n in graph.node if n.op_type == HEAD_START), None)
    if pool is None:
        raise ValueError("the model has no GlobalAveragePool head to split at")
    transpose = next(n for n in graph.node if n.output[0] == pool.input[0])
    if transpose.op_type != "Transpose":
        raise ValueError(f"expected a Transpose before the pooling, found {transpose.op_type}")
    body_out = transpose.input[0]
    shape = model.get_tensor_shape(body_out)
    needed, keep = {body_out}, []
    for node in reversed(list(graph.node)):
        if any(out in needed for out in node.output):
            keep.append(node)
            needed.update(name for name in node.input if name)
    del graph.node[:]
    graph.node.extend(reversed(keep))
    del graph.output[:]
    for info in [v for v in graph.value_info if v.name == body_out]:
        graph.value_info.remove(info)
    graph.output.append(helper.make_tensor_value_info(body_out, onnx.TensorProto.FLOAT, shape))
    return cleanup_model(model), tuple(shape)


def _head(qcdq: onnx.ModelProto, workdir: Path) -> onnx.ModelProto:
    """The QCDQ export from its pooling input to the logits."""
    import onnx.utils

    pool = next(n for n in qcdq.graph.node if n.op_type == HEAD_START)
    source, target = workdir / "qcdq.onnx", workdir / "head.onnx"
    onnx.save(qcdq, source)
    onnx.utils.extract_model(str(source), str(target), [pool.input[0]],
                             [o.name for o in qcdq.graph.output])  # fmt: skip
    return onnx.load(target)


def split(qonnx_path: Path, qcdq: onnx.ModelProto, workdir: Path) -> SplitModel:
    """Split a student's exports into the FPGA body and the host head.

    A model without a GlobalAveragePool head (an MLP, say) goes to the FPGA whole.
    """
    model = _channels_last(qonnx_path)
    if not any(node.op_type == HEAD_START for node in model.graph.node):
        shape = tuple(model.get_tensor_shape(model.graph.output[0].name))
        return SplitModel(model, None, shape)
    body, shape = _body(model)
    return SplitModel(body, _head(qcdq, workdir), shape)


def compile_body(
    split_model: SplitModel, output_dir: Path, reuse: int = 1, part: str | None = None,
    clock_mhz: float | None = None,
):  # fmt: skip
    """Convert the body with hls4ml (Vitis, io_stream), write the HLS project to ``output_dir``
    and compile its C simulation. ``reuse``, ``part`` and the clock go into the project."""
    import hls4ml

    extra = {"part": part} if part else {}
    if clock_mhz:
        extra["clock_period"] = round(1000.0 / clock_mhz, 3)
    # hls4ml narrates every layer on stdout; keep that in the project as convert.log.
    log = io.StringIO()
    with contextlib.redirect_stdout(log):
        config = hls4ml.utils.config.config_from_onnx_model(
            split_model.body, granularity="name", backend=HLS_BACKEND,
            default_precision=HLS_PRECISION, default_reuse_factor=reuse,
        )  # fmt: skip
        hls_model = hls4ml.converters.convert_from_onnx_model(
            split_model.body, output_dir=str(output_dir), io_type=IO_TYPE, backend=HLS_BACKEND,
            hls_config=config, **extra,
        )  # fmt: skip
        hls_model.compile()
    (Path(output_dir) / "convert.log").write_text(log.getvalue())
    return hls_model


def run_body(hls_model, split_model: SplitModel, images: np.ndarray) -> np.ndarray:
    """The FPGA body's C simulation on NCHW ``images``: NCHW activations for the head, or the
    model's outputs when the whole model is on the FPGA."""
    flat = np.asarray(hls_model.predict(np.ascontiguousarray(images, np.float32)))
    if split_model.head is None:
        return flat.reshape(len(images), *split_model.body_shape_nhwc[1:])
    _, height, width, channels = split_model.body_shape_nhwc
    return flat.reshape(len(images), height, width, channels).transpose(0, 3, 1, 2)


def run(hls_model, split_model: SplitModel, images: np.ndarray) -> np.ndarray:
    """The model's outputs: the C simulation, then the head on the host when there is one."""
    activations = run_body(hls_model, split_model, images)
    return activations if split_model.head is None else run_head(split_model, activations)


def run_head(split_model: SplitModel, activations: np.ndarray) -> np.ndarray:
    """The pooling head on the host (ONNX Runtime without graph optimizations, which do not
    keep the semantics of narrow Quantize/Clip/Dequantize ranges: ``reference_session_options``)."""
    import onnxruntime as ort

    from apprentice_hw.export.onnx_export import reference_session_options

    session = ort.InferenceSession(
        split_model.head.SerializeToString(), reference_session_options(),
        ["CPUExecutionProvider"],
    )  # fmt: skip
    name = split_model.head.graph.input[0].name
    return session.run(None, {name: np.ascontiguousarray(activations, np.float32)})[0]
