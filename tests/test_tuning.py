"""MetaSchedule tuning: records land in the target's database and builds apply them exactly."""

from __future__ import annotations

import numpy as np
import torch

from apprentice_hw.compiler import compile_module, prepare_module, tuning
from apprentice_hw.compiler.schedules import fused_module
from apprentice_hw.export import export_qcdq
from apprentice_hw.hardware import get_target
from apprentice_hw.models import ModelSpec, build_model
from apprentice_hw.quant import QuantLayers
from apprentice_hw.quant.calibration import calibrate_untrained
from apprentice_hw.verify import run_module_outputs


def _student_onnx(tmp_path):
    torch.manual_seed(0)
    images = torch.rand(16, 1, 8, 8)
    model = build_model(
        ModelSpec("resnet-small", {"width": 8}),
        QuantLayers.from_bits(2, 8, 8, "per-channel"),
        1,
        10,
    )
    calibrate_untrained(model, images, batch_size=8)
    return export_qcdq(model, images[:1], tmp_path / "m.onnx"), images.numpy()


def test_tuned_build_applies_records_and_stays_identical(tmp_path, monkeypatch):
    monkeypatch.setenv("APPRENTICE_HW_CACHE", str(tmp_path / "cache"))
    exported, images = _student_onnx(tmp_path)
    target = get_target("x86-host")
    prepared = prepare_module(exported, target)
    untuned = run_module_outputs(compile_module(prepared.mod, target, use_tuning=False), images)[0]
    assert not tuning.has_records(target)

    seen = []
    result = tuning.tune(
        fused_module(prepared.mod, target.tvm_target()), target, trials=1, top=1,
        progress=lambda task, best: seen.append((task, best)),
    )  # fmt: skip
    assert len(result.tasks_tuned) == 1 and "conv2d_int" in result.tasks_tuned[0]
    # The default schedule was measured first, so the task has a valid best time.
    assert seen and seen[0][1] is not None and 0 < seen[0][1] < 1e5
    assert tuning.has_records(target)
    assert result.database == tmp_path / "cache" / "tuning" / "x86-host"

    tuned = run_module_outputs(compile_module(prepared.mod, target), images)[0]
    np.testing.assert_array_equal(tuned, untuned)


def test_tune_refuses_targets_it_cannot_measure(run_cli, tmp_path):
    _student_onnx(tmp_path)  # writes m.onnx
    result = run_cli("tune", tmp_path / "m.onnx", "--target", "arm-a72")
    assert result.code == 2
    assert "does not run on this machine" in result.err
