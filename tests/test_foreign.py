"""Quantized models from other tools (``foreign_models``): checked, lowered and compiled."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from foreign_models import (
    FOREIGN_MODELS,
    conv_and_fc_nodes,
    export_brevitas,
    images,
    settled_brevitas_net,
)
from test_arm_kernels import PI, _run_on_emulated_core  # PI read at import, as there

from apprentice_hw.export.onnx_export import output_quant_step
from apprentice_hw.lowering import canonicalize
from apprentice_hw.output_steps import compare_outputs
from apprentice_hw.verify import load_onnx, run_onnxruntime_outputs, run_verify


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


# Every foreign model is checked; the default run keeps one of each architecture and source.
DEFAULT_MODELS = ("brevitas-cnv-w2a2", "brevitas-mobilenet-w4a4", "brevitas-mlp-w8a8",
                  "ort-mobilenet")  # fmt: skip
MODEL_CASES = [
    name if name in DEFAULT_MODELS else pytest.param(name, marks=pytest.mark.slow)
    for name in FOREIGN_MODELS
]


def _nominal_bits(name: str) -> int:
    """The weight bits the model was made with (ONNX Runtime's quantize_static: 8)."""
    return int(name.split("-w")[1][0]) if "-w" in name else 8


@pytest.mark.parametrize("name", MODEL_CASES)
def test_foreign_models_lower_every_layer_and_match_onnxruntime(name, tmp_path):
    """Models the project has never seen (Brevitas layers with its own quantizers, ONNX
    Runtime's quantize_static): every conv and fully connected layer becomes an integer
    kernel, the module stores the weights within 5% of parameters x bits / 8 (no fp32 copy),
    and its outputs are within one output step of ONNX Runtime on at least 99% of inputs."""
    path = FOREIGN_MODELS[name](tmp_path / f"{name}.onnx")
    arch = name.split("-")[1]
    inputs = tmp_path / "inputs.npy"
    np.save(inputs, images(arch, 64, seed=7))
    result = run_verify(path, samples=64, inputs_path=inputs)
    layers = result.layers
    assert len(layers) == conv_and_fc_nodes(path)
    assert [layer["reason"] for layer in layers if layer["strategy"] == "float"] == []
    parameters = sum(int(np.prod(layer["weight_shape"])) for layer in layers)
    stored = sum(layer["weight_bytes"] for layer in layers)
    assert stored <= 1.05 * parameters * _nominal_bits(name) / 8, (stored, parameters)
    check = result.comparisons["compiled_vs_onnxruntime"]
    assert result.passed and check.max_diff_steps <= 1.0, check


# -- apprentice-hw compile ----------------------------------------------------------------------

AARCH64_MACHINE = 183  # ELF e_machine of AArch64


def _module_outputs(library, inputs: np.ndarray) -> np.ndarray:
    """The module's outputs with TVM alone (no apprentice-hw code), one input at a time."""
    import tvm
    from tvm.runtime.vm import VirtualMachine

    main = VirtualMachine(tvm.runtime.load_module(str(library)), tvm.cpu())["main"]
    return np.concatenate([main(tvm.runtime.tensor(x[None])).numpy() for x in inputs])


def test_compile_writes_a_build_directory_every_command_takes(run_cli, tmp_path):
    path = FOREIGN_MODELS["brevitas-cnv-w2a2"](tmp_path / "cnv.onnx")
    out = tmp_path / "cnv-x86"
    result = run_cli("compile", path, "--target", "x86-host", "--out", out, "-n", 32)
    assert result.code == 0, result.err
    assert "5 of 5 conv / fully connected layers as integer kernels" in result.out
    for name in ("model.so", "model.qcdq.onnx", "inputs.npy", "report.json", "report.md",
                 "report.html", "footprint.png", "manifest.json", "bundle/run.py"):  # fmt: skip
        assert (out / name).is_file(), name
    # The module runs with TVM alone and equals ONNX Runtime on the model.
    inputs = images("cnv", 16, seed=11)
    model = canonicalize(load_onnx(path))
    expected = run_onnxruntime_outputs(model, inputs)[0]
    check = compare_outputs(expected, _module_outputs(out / "model.so", inputs),
                            output_quant_step(model))  # fmt: skip
    assert check.max_diff_steps <= 1.0, check
    report = json.loads((out / "report.json").read_text())
    assert report["model"]["format"] == "QCDQ" and report["checks"]["passed"]
    assert all(layer["macs"] > 0 for layer in report["layers"])  # every row has its shapes
    weights = report["memory"]["weights"]
    # No fp32 copy of a quantized layer's weights: besides the packed weights and the scales,
    # the module holds only the float parameters (the last layer's bias).
    fp32_rest = 4 * (weights["parameters"] - sum(int(np.prod(layer["weight_shape"]))
                                                 for layer in report["layers"]))  # fmt: skip
    assert weights["other_bytes"] <= fp32_rest, weights
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["source"]["format"] == "QCDQ" and "recipe" not in manifest
    # Every later command takes it.
    assert run_cli("verify", out, "-n", 16).code == 0
    shown = run_cli("report", out)
    assert shown.code == 0 and "apprentice-hw compile: cnv.onnx on x86-host" in shown.out
    plot = run_cli("report", out, "--format", "png", "--out", tmp_path / "cnv.png")
    assert plot.code == 0 and (tmp_path / "cnv.png").stat().st_size > 1000, plot.err
    runner = subprocess.run([sys.executable, "run.py", "--verify"], cwd=out / "bundle",
                            capture_output=True, text=True, check=False)  # fmt: skip
    assert runner.returncode == 0, runner.stderr
    # Without --force the directory is kept; with it, replaced.
    again = run_cli("compile", path, "--target", "x86-host", "--out", out)
    assert again.code == 2 and "already exists" in again.err
    (out / "report.json").write_text("{}")  # not model.so: this process has it loaded
    forced = run_cli("compile", path, "--target", "x86-host", "--out", out, "-n", 8, "--force")
    assert forced.code == 0, forced.err
    assert json.loads((out / "report.json").read_text())["checks"]["samples"] == 8


def test_compile_for_the_pi_writes_an_aarch64_module(run_cli, tmp_path):
    path = FOREIGN_MODELS["brevitas-mobilenet-w2a2"](tmp_path / "mobilenet.onnx")
    out = tmp_path / "mobilenet-pi"
    result = run_cli("compile", path, "--target", "arm-a72", "--out", out, "-n", 32)
    assert result.code == 0, result.err
    header = (out / "model.so").read_bytes()[:20]
    assert header[:4] == b"\x7fELF" and int.from_bytes(header[18:20], "little") == AARCH64_MACHINE
    report = json.loads((out / "report.json").read_text())
    assert "host build" in report["checks"]["compiled_module_checked"]
    assert [layer["strategy"] for layer in report["layers"] if layer["strategy"] == "float"] == []


@pytest.mark.slow
def test_compile_takes_qonnx_and_checks_the_users_reference(run_cli, tmp_path):
    """A QONNX file (FINN's format) compiles; with --inputs and --reference the module is
    also held to the user's own outputs, and a reference it does not match fails the
    command (exit 1) without writing anything."""
    model = settled_brevitas_net("cnv", 4, 4)
    path = export_brevitas(model, "cnv", tmp_path / "cnv.qonnx.onnx", fmt="qonnx")
    inputs = images("cnv", 24, seed=5)
    with torch.no_grad():
        reference = model(torch.from_numpy(inputs)).numpy()
    np.save(tmp_path / "x.npy", inputs)
    np.save(tmp_path / "ref.npy", reference)
    out = tmp_path / "cnv-qonnx"
    args = ("compile", path, "--target", "x86-host", "--inputs", tmp_path / "x.npy")
    result = run_cli(*args, "--reference", tmp_path / "ref.npy", "--out", out)
    assert result.code == 0, result.err
    report = json.loads((out / "report.json").read_text())
    assert report["model"]["format"] == "QONNX"
    assert report["checks"]["compiled_vs_reference"]["max_diff_steps"] <= 1.0
    step = report["checks"]["output_step"]
    np.save(tmp_path / "wrong.npy", reference + 5 * step)
    failed = run_cli(*args, "--reference", tmp_path / "wrong.npy", "--out", tmp_path / "no")
    last = failed.err.strip().splitlines()[-1]
    assert failed.code == 1 and last.startswith("error: the compiled module differs from your")
    assert not (tmp_path / "no").exists() and not list(tmp_path.glob(".no*partial"))


def test_compile_refuses_what_it_cannot_check_in_one_line(run_cli, tmp_path):
    (tmp_path / "notes.onnx").write_text("not a model")
    bad = run_cli("compile", tmp_path / "notes.onnx", "--target", "x86-host")
    assert bad.code == 2 and bad.err.count("\n") == 1 and "not a valid ONNX model" in bad.err
    fp32 = tmp_path / "float.onnx"
    torch.onnx.export(torch.nn.Linear(4, 2), torch.rand(1, 4), str(fp32), dynamo=False)
    floating = run_cli("compile", fp32, "--target", "x86-host", "--out", tmp_path / "f")
    assert floating.code == 2 and "output quantizer" in floating.err, floating.err
    checked = run_cli("verify", fp32)  # verify says what to do about a float output too
    assert checked.code == 2 and "output quantizer" in checked.err, checked.err
    path = FOREIGN_MODELS["ort-mlp"](tmp_path / "mlp.onnx")
    np.save(tmp_path / "x.npy", images("mlp", 4))
    wrong = run_cli("compile", path, "--target", "x86-host", "--inputs", tmp_path / "x.npy",
                    "--reference", tmp_path / "x.npy", "--out", tmp_path / "m")  # fmt: skip
    assert wrong.code == 2 and "reference outputs" in wrong.err, wrong.err
    fpga = run_cli("compile", path, "--target", "zcu104", "--out", tmp_path / "z")
    assert fpga.code == 2 and "FPGA" in fpga.err


@pytest.mark.slow
@pytest.mark.parametrize("name", ["brevitas-mobilenet-w2a2", "brevitas-cnv-w2a2"])
def test_foreign_models_are_exact_on_the_emulated_pi(name, tmp_path):
    """The Pi 4 module of a foreign model (depthwise convs, a 3-channel 2-bit first conv in
    one-block groups, a flattened FC) gives the x86 module's outputs, bit for bit, on the
    emulated Cortex-A72."""
    from apprentice_hw.backends import compile_module, export_module, prepare_module
    from apprentice_hw.hardware import get_target

    if not PI.ready:
        pytest.skip(f"no emulated Pi in {PI.folder}; 'make test-pi' sets it up")
    model = load_onnx(FOREIGN_MODELS[name](tmp_path / f"{name}.onnx"))
    inputs = images(name.split("-")[1], 4, seed=3)
    outputs = {}
    for target_name in ("x86-host", "arm-a72"):
        target = get_target(target_name)
        prepared = prepare_module(model, target, batch=len(inputs))
        library = tmp_path / f"{target_name}.so"
        export_module(compile_module(prepared.mod, target, use_tuning=False), target, library)
        outputs[target_name] = (
            _run_on_emulated_core(library, inputs, "cortex-a72", tmp_path)
            if target_name == "arm-a72"
            else _module_batch_outputs(library, inputs)
        )
    np.testing.assert_array_equal(outputs["arm-a72"], outputs["x86-host"])


def _module_batch_outputs(library, inputs: np.ndarray) -> np.ndarray:
    import tvm
    from tvm.runtime.vm import VirtualMachine

    main = VirtualMachine(tvm.runtime.load_module(str(library)), tvm.cpu())["main"]
    return main(tvm.runtime.tensor(inputs)).numpy()


@pytest.mark.slow
def test_compile_names_and_lowers_every_layer_of_a_uint8_weight_model(run_cli, tmp_path):
    """ONNX Runtime's QUInt8 weights (a zero point per tensor: 9-bit integers) are lowered,
    and each layer keeps its ONNX name and its shapes in the report."""
    path = FOREIGN_MODELS["ort-cnv-u8w"](tmp_path / "cnv_u8.onnx")
    out = tmp_path / "cnv-u8"
    result = run_cli("compile", path, "--target", "x86-host", "--out", out, "-n", 16, "-q")
    assert result.code == 0, result.err
    layers = json.loads((out / "report.json").read_text())["layers"]
    assert [layer["strategy"] for layer in layers] == ["int8"] * conv_and_fc_nodes(path)
    assert 9 in {layer["weight_bits"] for layer in layers}
    assert all(layer["macs"] > 0 and "/" in layer["name"] for layer in layers), layers
