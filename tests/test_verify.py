"""The verify gate: exact against Brevitas; against ONNX Runtime (float32), boundary flips pass."""

from __future__ import annotations

import numpy as np
import pytest

from apprentice_hw.output_steps import compare_outputs
from apprentice_hw.verify import VerifyResult

STEP = 0.25


def _result(outliers: int, shift_steps: float, gate: str = "compiled_vs_brevitas") -> VerifyResult:
    reference = np.round(np.random.default_rng(0).normal(size=(100, 10)) / STEP) * STEP
    candidate = reference.copy()
    candidate[:outliers] += shift_steps * STEP  # every logit: the top-1 label stays
    check = compare_outputs(reference, candidate, STEP)
    result = VerifyResult(100, STEP, 1.0, {gate: check}, "test")
    per_sample = np.abs(candidate - reference).max(axis=1)
    result.gate_steps_per_sample = np.round(per_sample / STEP, 4)
    return result


@pytest.mark.parametrize(
    ("gate", "outliers", "shift", "passes"),
    [
        ("compiled_vs_brevitas", 0, 0.0, True),
        ("compiled_vs_brevitas", 100, 1.0, True),  # every input one step off: within tolerance
        ("compiled_vs_brevitas", 1, 19.0, False),  # the exact reference has no rounding noise
        ("compiled_vs_brevitas", 100, 2.0, False),  # a systematic error
        ("compiled_vs_onnxruntime", 0, 0.0, True),
        ("compiled_vs_onnxruntime", 1, 19.0, True),  # ORT's float32 flipped a code on one input
        ("compiled_vs_onnxruntime", 2, 19.0, False),  # more than rounding boundaries explain
        ("compiled_vs_onnxruntime", 100, 2.0, False),
    ],
)
def test_gate_is_exact_for_brevitas_and_tolerates_float32_flips(gate, outliers, shift, passes):
    result = _result(outliers, shift, gate)
    assert result.gate == gate
    assert result.passed is passes
    assert result.comparisons[gate].fraction_within_one_step == (
        1.0 if shift <= 1.0 else (100 - outliers) / 100
    )
    assert result.comparisons[gate].max_diff_steps == shift


def _onnx_in_float64(model, inputs: np.ndarray) -> np.ndarray:
    """The exported QCDQ graph evaluated in float64 by ONNX's numpy reference evaluator.

    An independent exact reference: the graph holds Brevitas's integer weight codes and float32
    scales, and numpy computes every op on them in float64.
    """
    from onnx import TensorProto, numpy_helper
    from onnx.reference import ReferenceEvaluator

    from apprentice_hw.lowering import canonicalize

    graph_model = canonicalize(model)
    graph = graph_model.graph
    for index, init in enumerate(graph.initializer):
        if init.data_type == TensorProto.FLOAT:
            values = numpy_helper.to_array(init).astype(np.float64)
            graph.initializer[index].CopyFrom(numpy_helper.from_array(values, init.name))
    for value in [*graph.input, *graph.output]:
        if value.type.tensor_type.elem_type == TensorProto.FLOAT:
            value.type.tensor_type.elem_type = TensorProto.DOUBLE
    del graph.value_info[:]
    for opset in graph_model.opset_import:
        if opset.domain in ("", "ai.onnx"):
            opset.version = max(opset.version, 19)  # the evaluator's QDQ kernels start at 19
    evaluator = ReferenceEvaluator(graph_model)
    name = graph.input[0].name
    return np.concatenate(
        [
            evaluator.run(None, {name: inputs[i : i + 1].astype(np.float64)})[0]
            for i in range(len(inputs))
        ]
    )


def test_exact_brevitas_equals_the_exported_graph_in_float64(tmp_path):
    """Holding the float32 scales and weight codes makes Brevitas's float64 copy exact."""
    import torch

    from apprentice_hw.data import load_dataset
    from apprentice_hw.distill.trainer import train_steps
    from apprentice_hw.export import export_qcdq
    from apprentice_hw.export.onnx_export import output_quant_step
    from apprentice_hw.models import ModelSpec, build_model
    from apprentice_hw.quant import QuantLayers
    from apprentice_hw.verify import brevitas_outputs

    digits = load_dataset("digits")
    images = digits.train_x.repeat(1, 3, 1, 1)  # 8x8 digits as 3-channel images
    torch.manual_seed(0)
    model = build_model(ModelSpec("resnet20"), QuantLayers.from_bits(8, 8, 8, "per-channel"), 3, 10)
    train_steps(model, images, digits.train_y, steps=10)
    test = digits.test_x[:20].repeat(1, 3, 1, 1)
    exported = export_qcdq(model, test[:1], tmp_path / "m.onnx")
    exact = brevitas_outputs(model, test).float64
    graph = _onnx_in_float64(exported, test.numpy())
    check = compare_outputs(graph.astype(np.float32), exact, output_quant_step(exported))
    assert check.fraction_exact == 1.0, check
