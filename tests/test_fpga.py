"""hls4ml C simulation of a power-of-two student with a residual block and the pooling head.

Real hls4ml (Vitis backend, io_stream) generating and compiling C++ with g++; the reference is
ONNX Runtime on the QCDQ export. The pooling head runs on the host (see apprentice_hw/fpga/hls.py).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from apprentice_hw.data import load_dataset
from apprentice_hw.export import export_qcdq, export_qonnx_model
from apprentice_hw.export.onnx_export import run_onnxruntime
from apprentice_hw.fpga import hls
from apprentice_hw.models import ModelSpec, build_model
from apprentice_hw.quant import QuantLayers
from apprentice_hw.quant.calibration import calibrate_untrained


@pytest.fixture(scope="module")
def po2_student(tmp_path_factory):
    """A 4-bit power-of-two ResNet (residual blocks, pooling head) and 100 digits test images."""
    torch.manual_seed(0)
    digits = load_dataset("digits")
    spec = ModelSpec("resnet-small", {"width": 4, "blocks": [1, 1]})
    model = build_model(spec, QuantLayers.from_bits(4, 8, 8, "po2"), 1, 10)
    calibrate_untrained(model, digits.train_x[:64], batch_size=32)
    model.eval()
    folder = tmp_path_factory.mktemp("fpga")
    images = digits.test_x[:100]
    qcdq = export_qcdq(model, images[:1], folder / "m.qcdq.onnx")
    export_qonnx_model(model, images[:1], folder / "m.qonnx.onnx")
    return folder, qcdq, images.numpy()


def test_c_simulation_with_the_head_on_the_host_equals_onnxruntime_exactly(po2_student):
    folder, qcdq, images = po2_student
    split = hls.split(folder / "m.qonnx.onnx", qcdq, folder)
    kinds = [node.op_type for node in split.body.graph.node]
    assert "Add" in kinds and "Conv" in kinds  # the residual blocks are on the FPGA
    assert hls.HEAD_START not in kinds and "MatMul" not in kinds
    hls_model = hls.compile_body(split, folder / "hls")
    assert (folder / "hls" / "firmware").is_dir()  # the HLS project hls4ml wrote
    activations = hls.run_body(hls_model, split, images)
    logits = hls.run_head(split, activations)
    reference = run_onnxruntime(qcdq, images)
    assert logits.shape == reference.shape == (100, 10)
    assert np.array_equal(logits, reference)  # exact: zero output steps on 100 of 100 images
    assert len(set(reference.argmax(1))) > 1  # not a constant model
