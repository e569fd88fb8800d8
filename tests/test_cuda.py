"""CUDA targets without a GPU: real device code (cubin) inside the module, read back by TVM.

The builds run the real pipeline: the GPU schedules, the machine's nvcc, the host part
linked (cross-linked for Jetson). No GPU here, so nothing executes on one; the arithmetic is
checked on the host twin as for boards.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from report_schema import assert_report_unchanged

from apprentice_hw.compiler import cuda, nvrtc
from apprentice_hw.errors import UserError
from apprentice_hw.hardware import get_target

TINY = Path(__file__).parent / "data" / "tiny.toml"
EM_AARCH64, EM_X86_64 = 183, 62


def _nvcc_archs() -> frozenset[int]:
    try:
        return cuda.find_nvcc().archs
    except UserError:
        return frozenset()


needs_nvcc = pytest.mark.skipif(not _nvcc_archs(), reason="no nvcc on this machine")
HAS_NVRTC = nvrtc.find_nvrtc() is not None  # the cuda12 extra (CUDA 12's NVRTC), in dev


def _elf_machine(path: Path) -> int:
    header = path.read_bytes()[:20]
    assert header[:4] == b"\x7fELF"
    return int.from_bytes(header[18:20], "little")


@pytest.fixture(scope="module")
def gpu_builds(tmp_path_factory) -> dict[str, Path]:
    import apprentice_hw

    if not _nvcc_archs():
        pytest.skip("no nvcc on this machine")
    root = tmp_path_factory.mktemp("cuda")
    targets = ["jetson-orin", "a100"] + (["jetson-xavier"] if HAS_NVRTC else [])
    for target in targets:
        apprentice_hw.build(target, TINY, bits=4, out=root / target)
    return {target: root / target for target in targets}


@needs_nvcc
@pytest.mark.parametrize(("target", "host", "arch", "compiler"), [
    ("jetson-orin", EM_AARCH64, 87, "nvcc"),
    ("a100", EM_X86_64, 80, "nvcc"),
    # sm_72, which CUDA 13's nvcc dropped: CUDA 12's NVRTC from PyPI (the cuda12 extra)
    pytest.param("jetson-xavier", EM_AARCH64, 72, "NVRTC 12",
                 marks=pytest.mark.skipif(not HAS_NVRTC, reason="no cuda12 extra")),
])  # fmt: skip
def test_module_carries_a_cubin_for_the_targets_gpu(gpu_builds, target, host, arch, compiler):
    module = gpu_builds[target] / "model.so"
    assert _elf_machine(module) == host  # the host part is a shared object for the host CPU
    cubins = cuda.embedded_cubins(module)
    assert len(cubins) == 1
    assert [cuda.cubin_arch(c) for c in cubins] == [arch]  # from each cubin's ELF header
    assert int.from_bytes(cubins[0][18:20], "little") == cuda.EM_CUDA
    assert_report_unchanged(gpu_builds[target] / "report.json", "build-cuda")
    report = json.loads((gpu_builds[target] / "report.json").read_text())
    assert report["device_code"]["archs"] == [f"sm_{arch}"]
    assert report["device_code"]["bytes"] == len(cubins[0])
    assert report["device_code"]["compiler"].startswith(compiler)
    assert report["target"]["device"] == "cuda"
    assert "NVIDIA GPU" in report["latency"]["reason"]
    assert report["latency_estimate"]["ms"] > 0
    assert report["memory"]["activations"]["batch_8"]["activation_bytes_planned"] > 0
    assert "GPU memory" in (gpu_builds[target] / "report.md").read_text()
    bundle = json.loads((gpu_builds[target] / "bundle" / "manifest.json").read_text())
    assert bundle["target"]["device"] == "cuda"
    assert bundle["verification"]["tolerance_steps"] == 1.0


STUB_DRIVER = """/* No GPU here: every CUDA driver call answers CUDA_ERROR_NO_DEVICE (100). It only
   lets TVM's CUDA runtime library load so that its own deserializer reads the module. */
"""


@pytest.fixture(scope="module")
def cuda_driver_stub(tmp_path_factory) -> Path:
    """A folder with a libcuda.so.1 whose every call fails (for LD_LIBRARY_PATH)."""
    import tvm

    runtime = Path(tvm.__file__).parent / "lib" / "libtvm_runtime_cuda.so"
    listed = subprocess.run(["nm", "-D", "--undefined-only", str(runtime)], capture_output=True,
                            text=True, check=True).stdout  # fmt: skip
    names = {line.split()[-1].split("@")[0] for line in listed.splitlines() if line.strip()}
    symbols = sorted(name for name in names if name.startswith("cu") and name[2:3].isupper())
    folder = tmp_path_factory.mktemp("libcuda")
    stub = folder / "stub.c"
    stub.write_text(
        STUB_DRIVER + "".join(f"int {name}(void) {{ return 100; }}\n" for name in symbols)
    )
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(folder / "libcuda.so.1"), str(stub)],
                   check=True)  # fmt: skip
    return folder


def test_tvms_cuda_runtime_reads_the_embedded_cubin(gpu_builds, cuda_driver_stub):
    """TVM's CUDA module loader (libtvm_runtime_cuda) finds the cubin and every kernel."""
    module = gpu_builds["a100"] / "model.so"
    cubin = cuda.embedded_cubins(module)[0]
    probe = f"""
import json, tvm, tvm.backend.cuda
lib = tvm.runtime.load_module({str(module)!r})
device = lib.imports[0].imports[0]
try:
    device.inspect_source("cubin")
    data = b""
except UnicodeDecodeError as exc:  # the binary comes back through a str conversion
    data = exc.object
print(json.dumps({{"kind": device.kind, "source": device.inspect_source("cu"),
                  "bytes": len(data), "elf": data[:4].hex()}}))
"""
    env = {"LD_LIBRARY_PATH": str(cuda_driver_stub), "PATH": "/usr/bin:/bin"}
    completed = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                               env=env, check=False)  # fmt: skip
    if "libcudart" in completed.stderr and completed.returncode != 0:
        pytest.skip("TVM's CUDA runtime needs libcudart, which this machine lacks")
    assert completed.returncode == 0, completed.stderr[-2000:]
    loaded = json.loads(completed.stdout.strip().splitlines()[-1])
    # Format "cubin", the binary the build embedded, no CUDA source left to compile on the board.
    assert loaded == {"kind": "cuda", "source": "", "bytes": len(cubin), "elf": "7f454c46"}


def test_the_bundle_runner_loads_a_cuda_module_with_the_runtime_alone(
    gpu_builds, cuda_driver_stub, runtime_only_tvm, tmp_path
):
    """What a GPU machine runs: run.py with a runtime-only TVM reads the CUDA module; with no
    GPU it stops with one line."""
    bundle = tmp_path / "bundle"
    shutil.copytree(gpu_builds["a100"] / "bundle", bundle)
    env = {"LD_LIBRARY_PATH": str(cuda_driver_stub), "PYTHONPATH": str(runtime_only_tvm),
           "PATH": "/usr/bin:/bin"}  # fmt: skip
    probe = f"""
import sys, tvm, tvm.base
sys.path.insert(0, {str(bundle)!r})
import run
run.load_cuda_runtime(tvm)
library = tvm.runtime.load_module({str(bundle / "model.so")!r})
kinds = [m.kind for m in library.imports] + [c.kind for m in library.imports for c in m.imports]
print(tvm.base._RUNTIME_ONLY, "cuda" in kinds)
"""
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            env=env, check=False)  # fmt: skip
    if "libcudart" in loaded.stderr and loaded.returncode != 0:
        pytest.skip("TVM's CUDA runtime needs libcudart, which this machine lacks")
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    assert loaded.stdout.split() == ["True", "True"]
    refused = subprocess.run([sys.executable, str(bundle / "run.py"), "--verify"],
                             capture_output=True, text=True, env=env, check=False)  # fmt: skip
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        "error: this bundle runs on an NVIDIA GPU and TVM sees none here; run it on the "
        "target (a100)"
    ]


def test_cubin_arch_reads_both_header_layouts():
    header = bytearray(64)
    header[:4] = b"\x7fELF"
    header[18:20] = cuda.EM_CUDA.to_bytes(2, "little")
    header[48:52] = (0x6005704).to_bytes(4, "little")  # CUDA 12.8+: sm in bits 8-15
    assert cuda.cubin_arch(bytes(header)) == 87
    header[48:52] = (0x500550).to_bytes(4, "little")  # older: sm in bits 0-7
    assert cuda.cubin_arch(bytes(header)) == 80
    with pytest.raises(ValueError, match="EM_CUDA"):
        cuda.cubin_arch(b"\x7fELF" + bytes(60))


def test_an_arch_nothing_here_compiles_fails_before_training(tmp_path, run_cli, monkeypatch):
    """Without the cuda12 extra, CUDA 13's nvcc alone cannot build for the Nano (sm_53)."""
    if 53 in _nvcc_archs() or not _nvcc_archs():
        pytest.skip("this nvcc compiles sm_53 (or there is none)")
    monkeypatch.setattr(cuda, "DEVICE_COMPILERS", (cuda._nvcc_compiler,))
    result = run_cli("build", "-t", "jetson-nano", "-r", TINY, "-o", tmp_path / "nano")
    assert result.code == 2
    assert "needs device code for sm_53" in result.err
    assert "apprentice-hw[cuda12]" in result.err and "APPRENTICE_HW_NVCC" in result.err
    assert len(result.err.strip().splitlines()) == 1
    assert not (tmp_path / "nano").exists()


@pytest.mark.skipif(not HAS_NVRTC, reason="no cuda12 extra")
def test_nvrtc_compiles_the_nanos_kernels(tmp_path):
    """sm_53 (no dp4a: the scalar schedule) through CUDA 12's NVRTC; a cubin for sm_53."""
    from apprentice_hw.backends import compile_module, prepare_module
    from apprentice_hw.report.sizing import export_model

    model = export_model("resnet20", "W4A4", 32, 3, 10, 8, tmp_path / "model.onnx")
    target = get_target("jetson-nano")
    (source,) = cuda.cuda_sources(compile_module(prepare_module(model, target).mod, target).mod)
    compiler = cuda.device_compiler(53)
    assert compiler.name.startswith("NVRTC 12")
    assert cuda.cubin_arch(compiler.compile(source, 53)) == 53


def test_no_device_compiler_is_a_one_line_error(tmp_path, run_cli, monkeypatch):
    monkeypatch.setattr(cuda, "DEVICE_COMPILERS", ())  # neither nvcc nor the cuda12 extra
    result = run_cli("build", "-t", "a100", "-r", TINY, "-o", tmp_path / "out")
    assert result.code == 2 and "no nvcc or NVRTC found" in result.err
    assert len(result.err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_a_wrong_nvcc_setting_is_a_one_line_error(tmp_path, run_cli, monkeypatch):
    """A mistyped APPRENTICE_HW_NVCC stops the build (no silent fall back to NVRTC)."""
    monkeypatch.setenv(cuda.NVCC_ENV, str(tmp_path / "no-nvcc"))
    cuda.find_nvcc.cache_clear()
    try:
        result = run_cli("build", "-t", "a100", "-r", TINY, "-o", tmp_path / "out")
    finally:
        cuda.find_nvcc.cache_clear()
    assert result.code == 2
    assert result.err.strip() == (
        f"error: APPRENTICE_HW_NVCC is {tmp_path / 'no-nvcc'}, which does not exist; "
        "point it at an nvcc or unset it"
    )
    assert not (tmp_path / "out").exists()


def test_gpu_targets_are_data_files_with_their_architecture():
    expected = {"jetson-nano": 53, "jetson-xavier": 72, "jetson-orin": 87, "a100": 80,
                "l4": 89, "h100": 90}  # fmt: skip
    for name, arch in expected.items():
        target = get_target(name)
        assert target.device == "cuda" and cuda.target_arch(target.tvm) == arch
        assert not target.runs_on_this_machine
        assert (target.arch == "aarch64") == name.startswith("jetson")
        assert target.tvm_target().host is not None
    assert shutil.which("aarch64-linux-gnu-g++")  # Jetson host code is cross-linked


def test_packed_cuda_entries_parse_even_when_the_cubin_ends_in_zeros():
    def string(value: bytes) -> bytes:
        return len(value).to_bytes(8, "little") + value

    cubin = b"\x7fELF" + bytes(120)  # section tables often end in zero bytes
    fmap = (1).to_bytes(8, "little") + string(b"kernel0") + bytes(12)
    blob = string(b"cubin") + fmap + string(cubin)
    payload = b"prefix" + string(b"cuda") + len(blob).to_bytes(8, "little") + blob + b"suffix"
    [entry] = cuda.find_cuda_entries(payload)
    assert (entry.fmt, entry.fmap, entry.data) == (b"cubin", fmap, cubin)
    assert payload[entry.end :] == b"suffix"
