"""The CUDA conv kernels: dp4a, weights decoded in registers, the CPU kernels' numbers.

No GPU is lent to CI, so each distinct conv kernel of a ResNet-20 (random weights, exported as
a build exports it) is checked three ways here: the schedule applies (one kernel, no shared
memory), nvcc compiles it to ``dp4a`` instructions without spilling registers, and TVM's
CUDA C for it, executed on the host thread by thread (``cuda_on_host``), computes the same
outputs as the CPU build's kernel for the same function. The last check covers the index
math, the packed-weight decoding, ``dp4a``'s semantics and the fused epilogue; it does not
cover nvcc's code generation or the hardware.
"""

from __future__ import annotations

import functools
import re
import subprocess

import numpy as np
import pytest
from cuda_on_host import launch_of, run_on_host

from apprentice_hw.compiler import cuda, gpu_schedules, schedules
from apprentice_hw.errors import UserError
from apprentice_hw.hardware import HOST_TARGET, get_target


def _nvcc():
    try:
        return cuda.find_nvcc()
    except UserError:
        return None


# (zoo name, options, input size, input channels) of the models whose kernels are checked
MODELS = {
    "resnet20": ("resnet20", {}, 32, 3),  # 16/32/64 channels: whole blocks of 16
    # 9x9 input, one channel (odd sizes, stride 2 to 5x5, a partial input-channel block)
    "odd-sizes": ("resnet-small", {"width": 16, "blocks": [1, 1]}, 9, 1),
    # 12 and 24 output channels: partial blocks of 16 (16 channels per thread)
    "odd-channels": ("resnet-small", {"width": 12, "blocks": [1, 1]}, 9, 1),
}


@functools.cache
def _fused(label: str, target_name: str, model_name: str = "resnet20"):
    """A zoo model at ``label``, lowered for ``target_name`` and fused (before scheduling)."""
    import tempfile
    from pathlib import Path

    from apprentice_hw.report.sizing import export_model

    zoo_name, options, size, channels = MODELS[model_name]
    with tempfile.TemporaryDirectory() as tmp:
        model = export_model(zoo_name, label, size, channels, 10, 8, Path(tmp) / "model.onnx",
                             options=options)  # fmt: skip
    return _fuse(model, target_name)


def _fuse(model, target_name: str):
    """``model`` lowered for ``target_name`` and fused (before scheduling)."""
    import tvm

    from apprentice_hw.backends import prepare_module

    target = get_target(target_name)
    tvm_target = tvm.target.Target(target.tvm_target())
    prepared = prepare_module(model, target)
    passes = gpu_schedules.legalize_passes(tvm_target)
    until_fused = passes[: [p.info.name for p in passes].index("FuseTIR") + 1]
    with tvm_target:
        return tvm.transform.Sequential(until_fused)(prepared.mod), tvm_target


def _conv_calls(mod, kinds: tuple[str, ...] = ("conv2d_int",)) -> list[tuple[object, list]]:
    """(fused PrimFunc, its call's arguments) for each distinct kernel shape of ``kinds``."""
    import tvm
    from tvm import relax

    call_tir = tvm.ir.Op.get("relax.call_tir")
    calls, shapes = [], set()
    for block in mod["main"].body.blocks:
        for binding in block.bindings:
            value = binding.value
            if not (isinstance(value, relax.Call) and value.op == call_tir):
                continue
            func = mod[value.args[0]]
            if not any(kind in value.args[0].name_hint for kind in kinds):
                continue
            shape = tuple((tuple(int(d) for d in p.shape), str(p.dtype)) for p in func.params)
            if shape not in shapes:
                shapes.add(shape)
                calls.append((func, list(value.args[1].fields)))
    return calls


def _arguments(func, args: list, rng) -> dict[str, np.ndarray]:
    """Buffers for one call: the model's constants, random codes and values for the rest."""
    import tvm

    buffers = {}
    for k, param in enumerate(func.params):
        shape, dtype = [int(d) for d in param.shape], str(param.dtype)
        arg = args[k] if k < len(args) else None  # the outputs come after the arguments
        if isinstance(arg, tvm.ir.expr.Constant):
            buffers[param.name] = arg.value.numpy().copy()
        elif np.issubdtype(np.dtype(dtype), np.integer):
            info = np.iinfo(dtype)
            buffers[param.name] = rng.integers(info.min, info.max + 1, shape, dtype=dtype)
        else:
            buffers[param.name] = rng.standard_normal(shape).astype(dtype)
    return buffers


def _run_on_cpu(func, buffers: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The same function with the CPU build's schedule, compiled for and run on this CPU."""
    import tvm

    target = tvm.target.Target(get_target(HOST_TARGET).tvm_target())
    scheduled = schedules.schedule_function(func, target)
    built = tvm.compile(tvm.IRModule({"main": scheduled.with_attr("global_symbol", "main")}),
                        target=target)  # fmt: skip
    tensors = [tvm.runtime.tensor(buffers[p.name].copy()) for p in func.params]
    built.mod["main"](*tensors)
    return {p.name: t.numpy() for p, t in zip(func.params, tensors, strict=True)}


def _cuda_source(scheduled, tvm_target) -> str:
    import tvm

    host = tvm.target.Target(tvm_target, host="llvm")
    built = tvm.compile(
        tvm.IRModule({"main": scheduled.with_attr("global_symbol", "main")}), target=host
    )
    return built.mod.imports[0].inspect_source()


@pytest.mark.parametrize(("label", "target_name", "model_name"), [
    ("W4A4", "a100", "resnet20"),  # 4-bit packed weights, 8-bit first and last layers, dp4a
    ("W4A4", "jetson-nano", "resnet20"),  # sm_53 has no dp4a: scalar products, same schedule
    ("W2A8", "a100", "odd-sizes"),
    ("W2A8", "a100", "odd-channels"),
    pytest.param("W2A8", "a100", "resnet20", marks=pytest.mark.slow),
    pytest.param("W8A8", "jetson-orin", "resnet20", marks=pytest.mark.slow),
])  # fmt: skip
def test_cuda_conv_kernels_compute_what_the_cpu_kernels_compute(
    label, target_name, model_name, tmp_path
):
    mod, tvm_target = _fused(label, target_name, model_name)
    calls = _conv_calls(mod)
    assert len(calls) >= 4  # stem, plain and strided 3x3, 1x1 shortcuts
    rng = np.random.default_rng(0)
    for func, args in calls:
        scheduled = gpu_schedules.schedule_function(func, tvm_target)
        assert scheduled is not None, "the GPU conv schedule did not apply"
        source = _cuda_source(scheduled, tvm_target)
        assert ("__dp4a(" in source) == gpu_schedules.has_dp4a(tvm_target)
        buffers = _arguments(func, args, rng)
        expected = _run_on_cpu(func, buffers)
        on_host = {name: array.copy() for name, array in buffers.items()}
        run_on_host(source, launch_of(scheduled), on_host, tmp_path)
        for param in func.params[len(args) :]:  # the outputs
            got, want = on_host[param.name], expected[param.name]
            if np.issubdtype(want.dtype, np.integer):
                # Quantized codes: identical, and varied enough that a wrong sum would show.
                assert np.array_equal(got, want), f"{param.name}: {np.mean(got != want):.1%} differ"
                assert len(np.unique(want)) > 4
            else:
                # A dequantized branch (float64) feeding a residual add: the two compilations
                # round the last bits differently (up to ~1e-13 measured; not FMA contraction,
                # which leaves the same differences), far below any quantization step.
                np.testing.assert_allclose(got, want, rtol=1e-12, atol=0)


def test_depthwise_and_dense_cuda_kernels_compute_what_the_cpu_kernels_compute(tmp_path):
    """A MobileNet-style model's depthwise convs and its 4-bit packed classifier: one output
    per thread (``schedule_per_output``; DLight fails on them), the CPU kernels' results."""
    from foreign_models import FOREIGN_MODELS

    from apprentice_hw.verify import load_onnx

    model = load_onnx(FOREIGN_MODELS["brevitas-mobilenet-w4a4"](tmp_path / "mobilenet.onnx"))
    mod, tvm_target = _fuse(model, "jetson-orin")
    calls = _conv_calls(mod, ("conv2d_int_grouped", "dense_int"))
    assert len(calls) == 3  # two depthwise shapes, the classifier
    rng = np.random.default_rng(0)
    for func, args in calls:
        scheduled = gpu_schedules.schedule_function(func, tvm_target)
        assert scheduled is not None, "the per-output schedule did not apply"
        buffers = _arguments(func, args, rng)
        expected = _run_on_cpu(func, buffers)
        on_host = {name: array.copy() for name, array in buffers.items()}
        run_on_host(_cuda_source(scheduled, tvm_target), launch_of(scheduled), on_host, tmp_path)
        for param in func.params[len(args) :]:
            np.testing.assert_array_equal(on_host[param.name], expected[param.name])
            assert len(np.unique(expected[param.name])) > 4


def test_partial_channel_blocks_get_sixteen_channels_per_thread(caplog):
    """One channel per thread cannot confine their fused epilogue (see the schedule)."""
    mod, tvm_target = _fused("W2A8", "a100", "odd-channels")
    calls = _conv_calls(mod)
    with caplog.at_level("INFO", logger=gpu_schedules.__name__):
        scheduled = [gpu_schedules.schedule_function(f, tvm_target) for f, _ in calls]
    assert all(s is not None for s in scheduled)
    assert "trying 16 channels per thread" in caplog.text  # the check caught the first try
    # The threads of a CUDA block are pixel groups only (outputs 9x9 and 5x5), not 16 x those.
    one_lane = {gpu_schedules.conv_tile(size, size, lanes=1).threads for size in (9, 5)}
    assert {launch_of(s).threads for s in scheduled} == one_lane


def test_conv_tiles_cover_the_output_within_the_thread_limit():
    sizes = (1, 2, 3, 4, 5, 7, 8, 13, 14, 16, 28, 32, 56, 112, 224)
    for lanes in (gpu_schedules.LANES, 1):
        for rows in sizes:
            for columns in sizes:
                tile = gpu_schedules.conv_tile(rows, columns, lanes)
                assert columns % (tile.pixels * tile.columns) == 0 and rows % tile.rows == 0
                assert 1 <= tile.pixels <= gpu_schedules.PIXELS_PER_THREAD
                assert lanes <= tile.threads <= gpu_schedules.MAX_THREADS


@pytest.mark.skipif(_nvcc() is None or 80 not in _nvcc().archs, reason="needs nvcc for sm_80")
def test_conv_kernels_compile_to_dp4a_without_spills(tmp_path):
    """nvcc's view of a whole model's kernels: dp4a in the PTX, registers only, no spills."""
    from apprentice_hw.backends import compile_module, prepare_module
    from apprentice_hw.report.sizing import export_model

    model = export_model("resnet20", "W2A8", 32, 3, 10, 8, tmp_path / "model.onnx")
    target = get_target("a100")
    executable = compile_module(prepare_module(model, target).mod, target)
    (source,) = cuda.cuda_sources(executable.mod)
    kernels = {
        match.group(1): body
        for body in source.split('extern "C" __global__')
        if (match := re.match(r" void __launch_bounds__\(\d+\) (\w+)\(.*\) \{", body))
    }
    conv_kernels = [name for name in kernels if "conv2d_int" in name]
    # One launch per conv layer (layers of the same shape and epilogue share one).
    assert 5 <= len(conv_kernels) <= sum(node.op_type == "Conv" for node in model.graph.node)
    assert not any("__shared__" in kernels[name] for name in conv_kernels)
    (tmp_path / "k.cu").write_text(source)
    nvcc = str(cuda.find_nvcc().path)
    subprocess.run([nvcc, "-ptx", "-arch=sm_80", "-O3", "-w", "-o", str(tmp_path / "k.ptx"),
                    str(tmp_path / "k.cu")], check=True)  # fmt: skip
    ptx = (tmp_path / "k.ptx").read_text()
    assert ptx.count("dp4a.u32.s32") >= len(conv_kernels)
    report = subprocess.run([nvcc, "-cubin", "-arch=sm_80", "-O3", "-w", "-Xptxas", "-v",
                             "-o", str(tmp_path / "k.cubin"), str(tmp_path / "k.cu")],
                            capture_output=True, text=True, check=True).stderr  # fmt: skip
    # Per kernel: no stack frame (the local arrays are registers) and no spills.
    usage = r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill"
    frames = re.findall(usage, report)
    assert frames and all(f == ("0", "0", "0") for f in frames), report[-2000:]
