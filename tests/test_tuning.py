"""Tuning: knob settings measured here or over RPC, records applied exactly by later builds."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from apprentice_hw.backends import compile_module, prepare_module
from apprentice_hw.compiler import tuning
from apprentice_hw.compiler.schedules import (
    DEFAULT_ACCUMULATORS,
    MAX_ACCUMULATORS,
    conv_knob_space,
    default_conv_knobs,
    fused_module,
    kernel_key,
)
from apprentice_hw.errors import UserError
from apprentice_hw.export import export_qcdq
from apprentice_hw.hardware import get_target
from apprentice_hw.models import ModelSpec, build_model
from apprentice_hw.quant import QuantLayers
from apprentice_hw.quant.calibration import calibrate_untrained
from apprentice_hw.remote import RemoteDevice, free_port, local_rpc
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


@pytest.fixture
def student(tmp_path, monkeypatch):
    monkeypatch.setenv("APPRENTICE_HW_CACHE", str(tmp_path / "cache"))
    exported, images = _student_onnx(tmp_path)
    target = get_target("x86-host")
    prepared = prepare_module(exported, target)
    return target, prepared, images


def _scheduled_by_records(fused, target) -> set[str]:
    applied = tuning.apply_records(fused, target, target.tvm_target())
    return {
        gvar.name_hint
        for gvar, func in applied.functions_items()
        if func.attrs is not None and "tirx.is_scheduled" in func.attrs
    }


def test_knob_space_starts_with_the_default_and_fits_the_registers(student):
    from tvm import s_tir

    target, prepared, _ = student
    fused = fused_module(prepared.mod, target.tvm_target())
    tasks = tuning.conv_tasks(fused, target.tvm_target())
    assert tasks and all("conv2d_int" in task.name for task in tasks)
    assert [t.flops * t.weight for t in tasks] == sorted(
        (t.flops * t.weight for t in tasks), reverse=True
    )
    for task in tasks:
        space = conv_knob_space(s_tir.Schedule(task.mod), target.tvm_target())
        assert space == task.space and len(set(space)) == len(space) > 1
        sch = s_tir.Schedule(task.mod)
        assert space[0] == default_conv_knobs(sch, target.tvm_target())  # the default first
        assert space[0].pixels * space[0].blocks <= DEFAULT_ACCUMULATORS
        assert all(k.pixels * k.blocks <= MAX_ACCUMULATORS for k in space[1:])


def test_tuned_build_applies_records_and_stays_identical(student, tmp_path):
    target, prepared, images = student
    untuned = run_module_outputs(compile_module(prepared.mod, target, use_tuning=False), images)[0]
    assert not tuning.has_records(target)

    fused = fused_module(prepared.mod, target.tvm_target())
    seen = []
    result = tuning.tune(fused, target, trials=3, top=2, progress=seen.append)
    assert len(result.tasks) == 2 and all("conv2d_int" in t.name for t in result.tasks)
    assert seen[-1].measured == seen[-1].candidates == 6
    for task in result.tasks:
        # The default setting was measured first, and the best is at least as fast.
        assert task.default_us is not None and 0 < task.best_us <= task.default_us < 1e5
    assert result.database == tuning.tuning_dir(target)
    assert result.database.parent == tmp_path / "cache" / "tuning" / "x86-host"
    assert tuning.has_records(target)
    assert {t.name for t in result.tasks} <= _scheduled_by_records(fused, target)

    tuned = run_module_outputs(compile_module(prepared.mod, target), images)[0]
    np.testing.assert_array_equal(tuned, untuned)


def test_shipped_knobs_are_applied(student, tmp_path, monkeypatch):
    """A knob table under a targets folder's tuned/<target>/<cpu>.json schedules its kernels."""
    import tvm_ffi
    from tvm import s_tir

    from apprentice_hw.compiler.schedules import schedule_blocked_conv, schedule_function

    target, prepared, images = student
    tvm_target = target.tvm_target()
    fused = fused_module(prepared.mod, tvm_target)
    task = tuning.conv_tasks(fused, tvm_target)[0]
    chosen = task.space[-1]  # not the default
    result = tuning.TaskResult(task.name, kernel_key(task.mod["main"]), 2.0, 1.0, chosen, 2)
    table = tmp_path / "my-targets" / "tuned" / "x86-host" / f"{tuning.cpu_key(tvm_target)}.json"
    assert tuning.write_shipped_knobs(table, [result], tvm_target, "test CPU") == 1
    monkeypatch.setenv("APPRENTICE_HW_TARGETS", str(tmp_path / "my-targets"))
    assert tuning.shipped_files(target)[0] == table  # before the repository's own tables
    assert tuning.shipped_knobs(target)[result.key] == chosen

    func = fused[task.name]
    expected = s_tir.Schedule(func)
    schedule_blocked_conv(expected, tvm_target, chosen)
    scheduled = schedule_function(func, tvm_target, tuning.shipped_knobs(target))
    default = schedule_function(func, tvm_target)
    assert tvm_ffi.structural_equal(scheduled.body, expected.mod["main"].body)
    assert not tvm_ffi.structural_equal(scheduled.body, default.body)

    untuned = run_module_outputs(compile_module(prepared.mod, target, use_tuning=False), images)
    shipped = run_module_outputs(compile_module(prepared.mod, target), images)
    np.testing.assert_array_equal(shipped[0], untuned[0])


def test_time_budget_stops_tuning(student):
    target, prepared, _ = student
    fused = fused_module(prepared.mod, target.tvm_target())
    result = tuning.tune(fused, target, time_budget_s=1e-6)
    assert result.stopped_by_budget and result.measured == 0


@pytest.mark.slow  # 30 s; the default run cross-links a board's kernels (remote builder test)
def test_remote_tuning_through_a_local_tracker(student):
    """A tracker and an RPC server on 127.0.0.1: kernels are cross-linked (.so) and timed there."""
    target, prepared, _ = student
    fused = fused_module(prepared.mod, target.tvm_target())
    with local_rpc(key="x86-test") as device:
        device.check()
        with pytest.raises(UserError, match="no board with key 'pi4'"):
            RemoteDevice(device.host, device.port, "pi4").check(attempts=1)
        result = tuning.tune(fused, target, trials=2, top=1, remote=device)
    (task,) = result.tasks
    assert task.measured == 2 and task.best_us is not None and task.default_us is not None
    assert task.name in _scheduled_by_records(fused, target)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--target", "arm-a72"], "does not run on this machine"),
        (["--time-budget", "ten minutes"], "--time-budget must be a positive duration"),
        (["--time-budget", "0s"], "--time-budget must be a positive duration"),
        (["--tracker", "127.0.0.1:9190"], "--tracker and --key go together"),
        (["--tracker", "localhost", "--key", "pi"], "--tracker must be HOST:PORT"),
        (["--trials", "0"], "--trials must be at least 1"),
        (["--tracker", f"127.0.0.1:{free_port()}", "--key", "pi"], "cannot reach the TVM RPC"),
    ],
)
def test_tune_rejects_bad_options(run_cli, tmp_path, args, message):
    _student_onnx(tmp_path)  # writes m.onnx
    result = run_cli("tune", tmp_path / "m.onnx", *args)
    assert result.code == 2
    assert message in result.err and "Traceback" not in result.err


def test_remote_builder_cross_links_for_the_board(student):
    """For a board target the builder links an aarch64 shared object the board can load."""
    from tvm.s_tir import meta_schedule as ms

    _, prepared, _ = student
    board = get_target("arm-a72")
    tvm_target = board.tvm_target()
    task = tuning.conv_tasks(fused_module(prepared.mod, tvm_target), tvm_target)[0]
    measurer = tuning.Measurer(board, RemoteDevice("127.0.0.1", free_port(), "pi4"))
    schedule = tuning.scheduled(task, task.space[0], tvm_target)
    (built,) = measurer.builder.build([ms.builder.BuilderInput(schedule.mod, tvm_target)])
    assert built.error_msg is None and built.artifact_path.endswith(".so")
    with open(built.artifact_path, "rb") as library:
        header = library.read(20)
    assert header[:4] == b"\x7fELF" and int.from_bytes(header[18:20], "little") == 183  # AArch64
