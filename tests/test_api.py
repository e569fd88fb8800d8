"""The public Python API: options, results, distillation of your own networks, the example."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from report_schema import assert_report_unchanged
from torch import nn

import apprentice_hw as ahw
from apprentice_hw.errors import UserError

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tests" / "data" / "tiny.toml"


def _fresh_python(code: str) -> str:
    """What ``code`` prints in a new interpreter (nothing imported yet)."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, cwd=REPO)  # fmt: skip
    return done.stdout.strip()


def test_api_names_stay_functions_after_their_namesake_modules_are_imported():
    """``apprentice_hw.report`` (and verify, distill, deploy) are functions even after some
    code imports ``apprentice_hw.report.writer`` and the like for the first time."""
    code = (
        "import apprentice_hw as a\n"
        "import apprentice_hw.report.writer, apprentice_hw.distill.trainer\n"
        "import apprentice_hw.deploy.remote_run, apprentice_hw.verify\n"
        "print(all(callable(getattr(a, n)) for n in a.__all__ if n[0] != '_'))\n"
    )
    assert _fresh_python(code) == "True"


def test_build_options_are_validated_serialisable_and_the_resume_identity(tmp_path):
    options = ahw.build_options("x86-host", TINY, out=tmp_path / "b", bits=4, kernel="int8")
    assert options.recipe.weight_bits == 4 and options.target.name == "x86-host"
    again = ahw.BuildOptions.from_dict(json.loads(json.dumps(options.to_dict())))
    assert again.identity() == options.identity() and again.out == options.out
    with pytest.raises(AttributeError):
        options.kernel = "packed"  # frozen
    with pytest.raises(UserError, match="apply to FPGA targets"):
        ahw.build_options("x86-host", TINY, fpga=ahw.FpgaOptions(reuse=4))
    with pytest.raises(UserError, match="not both"):
        ahw.FpgaOptions(reuse=2, fps=100.0)
    with pytest.raises(UserError, match="unknown recipe override"):
        ahw.build_options("x86-host", TINY, bitz=4)


def test_fpga_targets_default_to_power_of_two_quantizers():
    assert ahw.build_options("zcu104", TINY).recipe.quant == "po2"
    assert ahw.build_options("zcu104", TINY, quant="per-channel").recipe.quant == "per-channel"
    assert ahw.build_options("x86-host", TINY).recipe.quant != "po2"


def test_distillation_loss_module_is_the_papers_loss():
    from apprentice_hw.distill import apprentice_loss

    torch.manual_seed(0)
    student, teacher = torch.randn(8, 10, requires_grad=True), torch.randn(8, 10)
    labels = torch.randint(0, 10, (8,))
    criterion = ahw.DistillationLoss(alpha=1.0, beta=0.5, gamma=0.5, tau=2.0)
    total = criterion(student, teacher, labels)
    expected = apprentice_loss(student, teacher, labels, 1.0, 0.5, 0.5, 2.0)
    assert torch.equal(total, expected.total)
    total.backward()
    assert student.grad is not None
    with pytest.raises(UserError, match="both 0"):
        ahw.DistillationLoss(beta=0.0, gamma=0.0)


class _Tiny(nn.Module):
    def __init__(self, layers, width: int = 8) -> None:
        super().__init__()
        self.input_quant = layers.input_quant()
        self.conv = layers.conv(1, width, 3, 1, edge=True)
        self.relu = layers.relu()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head_quant = layers.head_quant()
        self.fc = layers.linear(width, 10)
        self.output_quant = layers.output_quant()

    def forward(self, x):
        x = self.relu(self.conv(self.input_quant(x)))
        return self.output_quant(self.fc(self.head_quant(torch.flatten(self.pool(x), 1))))


def test_distill_takes_your_own_networks_and_loaders():
    from torch.utils.data import DataLoader, TensorDataset

    from apprentice_hw.data import load_dataset

    data = load_dataset("digits")
    train = DataLoader(TensorDataset(data.train_x[:512], data.train_y[:512]), batch_size=64)
    test = (data.test_x[:200], data.test_y[:200])  # tensors work too
    torch.manual_seed(0)
    teacher = _Tiny(ahw.FloatLayers(), width=16)
    student = _Tiny(ahw.QuantLayers.from_bits(2, 4, 8, "per-channel"))
    result = ahw.distill(teacher, student, train, test, scheme="B", epochs=2)
    phases = [(m.phase, m.epoch) for m in result.history]
    assert phases == [("teacher", 1), ("teacher", 2), ("student", 1), ("student", 2)]
    assert result.teacher_top1 is not None and 0.0 <= result.student_top1 <= 1.0
    assert set(result.history[-1].terms) == {"H(y,p_T)", "H(y,p_S)", "H(z_T,p_S)"}
    assert not student.training  # returned in eval mode
    with pytest.raises(UserError, match="student_init"):  # C needs fp32 weights of its own
        ahw.distill(teacher, student, train, test, scheme="C", epochs=1)
    with pytest.raises(UserError, match=r"torch\.nn\.Module"):
        ahw.distill("teacher", student, train, test)


def test_builds_on_an_aarch64_machine_check_arm_targets_on_its_own_cpu(monkeypatch):
    from apprentice_hw import hardware

    monkeypatch.setattr(hardware, "host_arch", lambda: "aarch64")
    monkeypatch.setattr(hardware, "host_cpu_name", lambda: "neoverse-n1")
    monkeypatch.setattr(hardware, "host_cpu_flags", lambda: frozenset({"asimd"}))
    assert hardware.host_target_name() == "aarch64-host"
    arm = hardware.get_target("arm-a72")
    twin = hardware.host_twin(arm)
    assert twin.name == "aarch64-host" and twin.arch == "aarch64"
    assert twin.kernels == arm.kernels and twin.tvm["mcpu"] == "neoverse-n1"
    assert twin.runs_on_this_machine and twin.cross_compiler is None


@pytest.mark.timeout(900)
def test_the_example_distils_compiles_and_reports(tmp_path):
    """examples/distill_custom_cnn.py in its reduced form (one epoch per phase)."""
    out = tmp_path / "example"
    done = subprocess.run(
        [sys.executable, str(REPO / "examples" / "distill_custom_cnn.py"), "--epochs", "1",
         "--out", str(out)],
        capture_output=True, text=True, cwd=tmp_path, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "W2A4 student top-1" in done.stdout and "## Memory" in done.stdout
    for target, machine in (("x86-host", 62), ("arm-a72", 183)):  # ELF e_machine
        header = (out / target / "model.so").read_bytes()[:20]
        assert int.from_bytes(header[18:20], "little") == machine
        kind = "compile-x86" if target == "x86-host" else "compile-arm"
        assert_report_unchanged(out / target / "report.json", kind)
        report = json.loads((out / target / "report.json").read_text())
        assert report["checks"]["compiled_vs_onnxruntime"]["max_diff_steps"] <= 1.0
        assert all(layer["strategy"] != "float" for layer in report["layers"])


def test_the_command_line_starts_without_torch_onnx_or_tvm():
    """``apprentice-hw --help``, ``targets`` and every one-line error stay fast: the package and
    its CLI load torch, ONNX and TVM only when a command needs them."""
    code = (
        "import sys, apprentice_hw, apprentice_hw.cli\n"
        "print(sorted(m for m in ('torch', 'onnx', 'tvm') if m in sys.modules))\n"
    )
    assert _fresh_python(code) == "[]"


def test_a_kernel_name_no_strategy_has_is_refused_with_the_target_file(tmp_path):
    from apprentice_hw.backends import backend_for
    from apprentice_hw.hardware import load_target_file

    text = (REPO / "targets" / "arm-a72.toml").read_text()
    path = tmp_path / "arm-a72.toml"
    path.write_text(text.replace('kernels = ["bitserial", "packed", "int8"]', 'kernels = ["fast"]'))
    target = load_target_file(path)
    with pytest.raises(UserError, match=r"arm-a72\.toml: unknown kernel strategy 'fast'"):
        backend_for(target).check_target_file(target)
    with pytest.raises(UserError, match="unknown kernel strategy 'fast'"):
        ahw.tune(tmp_path / "model.onnx", target=str(path))  # before the model is read


def test_outputs_with_spatial_axes_agree_per_position():
    """Top-1 agreement is over axis 1 (the classes), per position of an (N, C, H, W) output."""
    import numpy as np

    from apprentice_hw.output_steps import compare_outputs

    reference = np.zeros((2, 3, 2, 2))
    reference[:, 1] = 1.0  # class 1 everywhere
    candidate = reference.copy()
    candidate[0, 2, 0, 0] = 2.0  # one position of one sample picks class 2
    check = compare_outputs(reference, candidate, step=1.0)
    assert check.prediction_agreement == 7 / 8
    assert check.max_diff_steps == 2.0 and check.fraction_exact == 0.5


def test_a_forced_kernel_that_takes_no_layer_is_warned_about():
    from apprentice_hw.lowering import LoweredLayer
    from apprentice_hw.pipeline import unused_kernel_warning

    layers = [LoweredLayer("conv", "conv2d", (8, 3, 3, 3), "int8"),
              LoweredLayer("fc", "dense", (10, 8), "packed")]  # fmt: skip
    assert unused_kernel_warning(None, layers) is None
    assert unused_kernel_warning("packed", layers) is None
    warning = unused_kernel_warning("bitserial", layers)
    assert warning.startswith("warning: --kernel bitserial supports none of the 2")
    assert "int8, packed" in warning
