"""QCDQ / QONNX export and the memory numbers read from the compiled module."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from apprentice_hw.compiler import import_onnx, memory_plan
from apprentice_hw.data import load_dataset
from apprentice_hw.export import (
    check_with_onnxruntime,
    export_qcdq,
    export_qonnx_model,
    output_quant_step,
)
from apprentice_hw.hardware import get_target
from apprentice_hw.models import ModelSpec, build_model
from apprentice_hw.quant import QuantLayers, act_preset, weight_preset


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module", params=[(2, 8), (4, 4)], ids=["w2a8", "w4a4"])
def student(request, digits):
    """An untrained student whose activation quantizers saw real data (calibrated scales)."""
    bits, act_bits = request.param
    torch.manual_seed(0)
    layers = QuantLayers(weight_preset(bits), act_preset(act_bits), weight_preset(8))
    model = build_model(ModelSpec("resnet-small", {"width": 4}), layers, 1, 10)
    model.train()
    with torch.no_grad():
        for start in range(0, 512, 128):
            model(digits.train_x[start : start + 128])
    return model.eval()


def test_qcdq_export_matches_brevitas_within_one_step(student, digits, tmp_path):
    model = export_qcdq(student, digits.test_x[:1], tmp_path / "m.onnx")
    assert (tmp_path / "m.onnx").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    initializers = {i.name for i in model.graph.initializer}
    assert [i.name for i in model.graph.input] == ["input"]  # BatchNorm inputs stripped
    assert not initializers & {i.name for i in model.graph.input}
    assert {n.op_type for n in model.graph.node} >= {"QuantizeLinear", "DequantizeLinear", "Conv"}
    check, _, _ = check_with_onnxruntime(student, model, digits.test_x)
    assert check.samples == len(digits.test_x)
    assert check.max_diff_steps <= 1.0
    assert check.prediction_agreement >= 0.99


def test_output_step_is_the_output_quantizers_scale(student, digits, tmp_path):
    model = export_qcdq(student, digits.test_x[:1], tmp_path / "m.onnx")
    scale = float(student.output_quant.act_quant.scale())
    assert output_quant_step(model) == pytest.approx(scale, rel=1e-6)


def test_export_has_a_dynamic_batch(student, digits, tmp_path):
    from apprentice_hw.export.onnx_export import run_onnxruntime

    model = export_qcdq(student, digits.test_x[:1], tmp_path / "m.onnx")
    assert run_onnxruntime(model, digits.test_x[:5].numpy()).shape == (5, 10)


def test_qonnx_export_carries_the_bit_widths(student, digits, tmp_path):
    model = export_qonnx_model(student, digits.test_x[:1], tmp_path / "m.qonnx.onnx")
    quant_nodes = [n for n in model.graph.node if n.op_type == "Quant"]
    assert quant_nodes
    constants = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    bit_widths = {float(constants[n.input[3]]) for n in quant_nodes if n.input[3] in constants}
    expected_weight_bits = float(student.stages[0][0].conv1.weight_quant.bit_width())
    assert expected_weight_bits in bit_widths


def test_memory_numbers_match_a_hand_count(student, digits, tmp_path):
    model = export_qcdq(student, digits.test_x[:1], tmp_path / "m.onnx")
    target = get_target("x86-host")
    plan1 = memory_plan(import_onnx(model, 1), target, 1)
    plan8 = memory_plan(import_onnx(model, 8), target, 8)
    # Fake-quant execution folds every weight to fp32; BatchNorm keeps 4 vectors per layer.
    weights = sum(m.weight.numel() for m in student.modules() if hasattr(m, "weight_quant"))
    batchnorm = sum(
        m.num_features for m in student.modules() if isinstance(m, torch.nn.BatchNorm2d)
    )
    expected = 4 * (weights + 4 * batchnorm + student.fc.bias.numel())
    assert plan1.weight_bytes == plan8.weight_bytes == expected
    assert 0 < plan1.activation_bytes_planned <= plan1.activation_bytes_unplanned
    assert plan8.activation_bytes_unplanned == 8 * plan1.activation_bytes_unplanned
    # The stem's output alone (4 channels x 8 x 8 fp32) must fit in the planned peak.
    assert plan1.activation_bytes_planned >= 4 * 8 * 8 * 4
    assert np.isclose(plan8.activation_bytes_planned / plan1.activation_bytes_planned, 8, rtol=0.1)
