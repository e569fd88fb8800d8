"""The target registry: shipped files, validation, user-added targets, the `targets` command."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from apprentice_hw.errors import UserError
from apprentice_hw.hardware import (
    TARGETS_ENV,
    all_targets,
    find_cross_compiler,
    get_target,
    host_cpu_name,
    target_files,
)

REPO = Path(__file__).resolve().parents[1]


def test_shipped_targets_are_registered():
    names = set(target_files())
    shipped = {"x86-host", "x86-avx2", "x86-avx512", "arm-a72", "arm-a53", "arm-a76", "arm-a55"}
    assert shipped | {"jetson-orin-cpu"} <= names


@pytest.mark.parametrize("name", sorted(target_files()))
def test_every_target_file_builds_a_tvm_target(name):
    from tvm.target import codegen

    target = get_target(name)
    if target.device == "fpga":  # built by hls4ml, not TVM: its part description instead
        from apprentice_hw.fpga.estimate import FpgaSpec

        assert FpgaSpec.from_target(target).clock_mhz > 0
        return
    tvm_target = target.tvm_target()
    assert tvm_target.kind.name == target.tvm["kind"]
    if target.tvm["kind"] == "llvm":  # LLVM knows the CPU (an unknown one compiles generic code)
        assert target.tvm["mcpu"] in codegen.llvm_get_cpu_archlist(tvm_target)
    host = target.tvm.get("host", {})
    if "mcpu" in host:  # a GPU target's host CPU
        assert host["mcpu"] in codegen.llvm_get_cpu_archlist(tvm_target.host)
    assert target.cores >= 1 and target.clock_ghz > 0 and target.memory_mib > 0
    assert target.peak_gmacs("fp32") > 0


def test_host_placeholders_are_resolved():
    host = get_target("x86-host")
    assert host.tvm["mcpu"] == host_cpu_name() != "host"
    assert host.tvm["num-cores"] == host.cores
    assert host.runs_on_this_machine


def test_arm_target_is_cross_compiled():
    arm = get_target("arm-a72")
    assert arm.tvm["mtriple"] == "aarch64-linux-gnu"
    assert arm.tvm["mcpu"] == "cortex-a72"
    assert not arm.runs_on_this_machine
    assert find_cross_compiler(arm).endswith("aarch64-linux-gnu-g++")


def test_adding_a_target_is_adding_a_file(tmp_path, monkeypatch):
    text = (REPO / "targets" / "arm-a72.toml").read_text().replace('"arm-a72"', '"my-board"')
    (tmp_path / "my-board.toml").write_text(text.replace("num-cores = 4", "num-cores = 2"))
    monkeypatch.setenv(TARGETS_ENV, str(tmp_path))
    assert "my-board" in [t.name for t in all_targets()]
    assert get_target("my-board").tvm["num-cores"] == 2


def test_target_by_path(tmp_path):
    path = tmp_path / "x86-host.toml"
    shutil.copy(REPO / "targets" / "x86-host.toml", path)
    assert get_target(str(path)).name == "x86-host"


def _write_variant(tmp_path: Path, old: str, new: str, name: str = "arm-a72") -> str:
    text = (REPO / "targets" / "arm-a72.toml").read_text()
    assert old in text
    path = tmp_path / f"{name}.toml"
    path.write_text(text.replace(old, new))
    return str(path)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("\ncores = 4\n", "\n", "missing required field 'cores'"),
        ("\ncores = 4\n", "\ncores = -1\n", "'cores' must be a positive number"),
        ('arch = "aarch64"', 'arch = "riscv"', "'arch' must be"),
        ("clock_ghz = 1.5", 'clock_ghz = "fast"', "'clock_ghz' must be a positive number"),
        ("fp32 = 8 ", "fp32 = 0 ", "peak rate for 'fp32' must be a positive number"),
        ('name = "arm-a72"', 'name = "other"', "must match the file name"),
        ("[tvm]", "[tvm\n", "is not valid TOML"),
    ],
)
def test_bad_target_files_are_user_errors(tmp_path, old, new, message):
    path = _write_variant(tmp_path, old, new)
    with pytest.raises(UserError, match=message):
        get_target(path)


def test_unknown_target_lists_the_choices():
    with pytest.raises(UserError, match=r"unknown target 'nope'; choose one of: .*arm-a72"):
        get_target("nope")


def test_missing_cross_compiler_names_the_package(tmp_path):
    path = _write_variant(tmp_path, '"aarch64-linux-gnu-g++"', '"no-such-g++"')
    with pytest.raises(UserError, match="apt-get install g\\+\\+-aarch64-linux-gnu"):
        find_cross_compiler(get_target(path))


def test_targets_command_lists_every_target(run_cli):
    result = run_cli("targets", "--verbose")
    assert result.code == 0
    for name in target_files():
        assert name in result.out
    assert "cortex-a72" in result.out and "aarch64-linux-gnu-g++" in result.out
    # Every CUDA target says which compiler would make its device code here (or why none).
    assert result.out.count("    device code: ") == sum(
        get_target(name).device == "cuda" for name in target_files()
    )


def test_a_generic_isa_target_runs_here_only_if_this_cpu_has_every_flag(monkeypatch):
    from apprentice_hw import hardware

    avx512 = get_target("x86-avx512")
    assert "avx512_vnni" in avx512.requires_isa
    avx2_only = frozenset(get_target("x86-avx2").requires_isa)
    monkeypatch.setattr(hardware, "host_cpu_flags", lambda: avx2_only)
    assert get_target("x86-avx2").runs_on_this_machine
    assert not avx512.runs_on_this_machine
    assert "avx512f" in avx512.missing_isa
    assert not get_target("arm-a72").missing_isa  # another architecture: not a question of flags


def _disassembly(target_name: str, tmp_path: Path) -> str:
    """objdump of the tiny tuning student compiled for ``target_name``."""
    import subprocess

    from apprentice_hw.backends import compile_module, export_module, prepare_module
    from tests.test_tuning import _student_onnx

    model, _ = _student_onnx(tmp_path)
    target = get_target(target_name)
    path = export_module(
        compile_module(prepare_module(model, target).mod, target), target, tmp_path / "m.so"
    )
    return subprocess.run(["objdump", "-d", "--no-show-raw-insn", str(path)], capture_output=True,
                          text=True, check=True).stdout  # fmt: skip


def test_generic_x86_modules_use_only_their_isa(tmp_path):
    """AVX2 code must not touch AVX-512 (it would die on an AVX2 CPU); AVX-512 code uses VNNI."""
    avx2 = _disassembly("x86-avx2", tmp_path / "avx2")
    assert "%ymm" in avx2 and "vpmaddwd" in avx2
    assert "%zmm" not in avx2 and "vpdpbusd" not in avx2 and "{%k" not in avx2
    avx512 = _disassembly("x86-avx512", tmp_path / "avx512")
    assert "vpdpbusd" in avx512 and "%zmm" in avx512
