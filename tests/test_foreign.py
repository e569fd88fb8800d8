"""Quantized models from other tools (``foreign_models``): checked, lowered and compiled."""

from __future__ import annotations

import numpy as np
import torch
from foreign_models import export_brevitas, images, settled_brevitas_net

from apprentice_hw.export.onnx_export import compare_outputs, output_quant_step
from apprentice_hw.lowering import canonicalize
from apprentice_hw.verify import load_onnx, run_onnxruntime_outputs


def test_onnxruntime_reference_keeps_narrow_clips_around_fc_layers(tmp_path):
    """ONNX Runtime's graph optimizations (even the basic level) rewrite Quantize -> Clip ->
    Dequantize around a Gemm as if the Clip were not there: a 2-bit Brevitas MLP came out 33
    output steps from the torch model. The reference runs the graph as ONNX defines it."""
    model = settled_brevitas_net("mlp", 2, 2)
    onnx_model = load_onnx(export_brevitas(model, "mlp", tmp_path / "mlp.onnx"))
    inputs = images("mlp", 64, seed=7)
    with torch.no_grad():
        expected = model(torch.from_numpy(inputs)).numpy()
    canonical = canonicalize(onnx_model)
    got = run_onnxruntime_outputs(canonical, inputs)[0]
    check = compare_outputs(expected, got, output_quant_step(canonical))
    assert check.max_diff_steps <= 1.0 and check.prediction_agreement == 1.0, check
    assert np.mean(np.abs(expected - got) < 1e-6) > 0.99
