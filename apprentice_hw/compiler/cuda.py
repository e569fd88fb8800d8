"""CUDA device code: compile TVM's kernels to a cubin (nvcc, or CUDA 12's NVRTC) and embed it.

TVM's PyPI wheel compiles CUDA kernels only where its CUDA runtime loads, which needs a GPU
driver (libcuda). On a build machine without one, ``tvm.compile`` leaves the CUDA *source* in
the module, and a board would have to compile it at load time. A build therefore compiles the
source itself with the machine's ``nvcc -cubin -arch=sm_XX`` (or, for GPUs that CUDA 13's nvcc
dropped, CUDA 12's NVRTC from PyPI: ``nvrtc.py``) and swaps the cubin into the module's
serialized imports before linking, so the shipped ``model.so`` carries device code for exactly
the target's GPU.

The serialized CUDA module is what TVM's ``CUDAModuleLoadFromBytes`` reads back: the format
string, the function table, then the binary (src/runtime/cuda/cuda_module.cc), each field a
dmlc stream value (a string is its uint64 length and its bytes).
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import struct
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from apprentice_hw.compiler import nvrtc
from apprentice_hw.errors import UserError

NVCC_ENV = "APPRENTICE_HW_NVCC"
NVCC_FALLBACKS = ("/usr/local/cuda/bin/nvcc",)
EM_CUDA = 190  # ELF e_machine of a cubin
_U64 = struct.Struct("<Q")


def _string(value: bytes) -> bytes:
    """A dmlc stream string: uint64 length, then the bytes."""
    return _U64.pack(len(value)) + value


@dataclass(frozen=True)
class Nvcc:
    """The nvcc that compiles device code, and the GPU architectures it can target."""

    path: Path
    version: str
    archs: frozenset[int]  # compute capabilities as integers (87 for sm_87)


class ConfiguredNvccMissingError(UserError):
    """``$APPRENTICE_HW_NVCC`` names a file that does not exist."""


@functools.cache
def find_nvcc() -> Nvcc:
    """``$APPRENTICE_HW_NVCC``, else ``nvcc`` on PATH, else /usr/local/cuda; a UserError if none."""
    configured = os.environ.get(NVCC_ENV)
    if configured and not Path(configured).exists():  # a wrong setting is not "no nvcc"
        raise ConfiguredNvccMissingError(
            f"{NVCC_ENV} is {configured}, which does not exist; point it at an nvcc or unset it"
        )
    candidates = [configured] if configured else [shutil.which("nvcc"), *NVCC_FALLBACKS]
    path = next((Path(c) for c in candidates if c and Path(c).exists()), None)
    if path is None:
        raise UserError(
            "CUDA targets need nvcc to compile device code; install the CUDA toolkit or set "
            f"{NVCC_ENV} to an nvcc"
        )
    version = subprocess.run([str(path), "--version"], capture_output=True, text=True).stdout
    listed = subprocess.run([str(path), "--list-gpu-arch"], capture_output=True, text=True).stdout
    release = re.search(r"release ([0-9.]+)", version)
    archs = frozenset(int(m) for m in re.findall(r"compute_(\d+)", listed))
    return Nvcc(path, release.group(1) if release else "unknown", archs)


def target_arch(tvm_target: dict) -> int:
    """The compute capability of a CUDA target dict (``"sm_87"`` -> 87)."""
    match = re.fullmatch(r"sm_(\d+)", str(tvm_target.get("arch", "")))
    if match is None:
        raise UserError(f'a CUDA target needs arch = "sm_XX" in [tvm], got {tvm_target}')
    return int(match.group(1))


@dataclass(frozen=True)
class DeviceCompiler:
    """What turns TVM's CUDA C into a cubin: a name for reports, its archs, how to call it."""

    name: str  # "nvcc 13.0", "NVRTC 12.9"
    archs: frozenset[int]
    compile: Callable[[str, int], bytes]  # (source, arch) -> cubin


def _nvcc_compiler() -> DeviceCompiler | None:
    try:
        nvcc = find_nvcc()
    except ConfiguredNvccMissingError:
        raise
    except UserError:  # no nvcc anywhere: the next compiler may do
        return None
    return DeviceCompiler(f"nvcc {nvcc.version}", nvcc.archs, functools.partial(_nvcc_cubin, nvcc))


def _nvrtc_compiler() -> DeviceCompiler | None:
    found = nvrtc.find_nvrtc()
    if found is None:
        return None
    return DeviceCompiler(f"NVRTC {found.version}", found.archs, found.compile_cubin)


# Tried in this order for a target's arch: the machine's nvcc, then CUDA 12's NVRTC from PyPI
# (``pip install 'apprentice-hw[cuda12]'``), which still compiles for sm_53 and sm_72 (Jetson
# Nano, Xavier), dropped by CUDA 13.
DEVICE_COMPILERS: tuple[Callable[[], DeviceCompiler | None], ...] = (
    _nvcc_compiler,
    _nvrtc_compiler,
)


def device_compiler(arch: int, target_name: str = "") -> DeviceCompiler:
    """The first device compiler that produces cubins for ``sm_<arch>``; a UserError if none."""
    found = [c for c in (finder() for finder in DEVICE_COMPILERS) if c is not None]
    for compiler in found:
        if arch in compiler.archs:
            return compiler
    what = f"target '{target_name}' needs" if target_name else "CUDA targets need"
    have = "; ".join(f"{c.name} targets sm_{min(c.archs, default=0)} and newer" for c in found)
    raise UserError(
        f"{what} device code for sm_{arch}, which nothing here compiles "
        f"({have or 'no nvcc or NVRTC found'}); install the CUDA toolkit, set {NVCC_ENV} to an "
        "nvcc that can, or pip install 'apprentice-hw[cuda12]' (CUDA 12's NVRTC: sm_50 to sm_90)"
    )


def check_device_compiler(tvm_target: dict, target_name: str) -> DeviceCompiler:
    """Fail before training when nothing here can compile for the target's GPU."""
    return device_compiler(target_arch(tvm_target), target_name)


def _nvcc_cubin(nvcc: Nvcc, source: str, arch: int) -> bytes:
    with tempfile.TemporaryDirectory(prefix="apprentice-hw-cuda-") as tmp:
        source_path, cubin_path = Path(tmp) / "kernels.cu", Path(tmp) / "kernels.cubin"
        source_path.write_text(source)
        command = [str(nvcc.path), "-cubin", f"-arch=sm_{arch}", "-O3", "-w",
                   "-o", str(cubin_path), str(source_path)]  # fmt: skip
        completed = subprocess.run(command, capture_output=True, text=True, check=False)
        if completed.returncode != 0:
            raise RuntimeError(f"nvcc failed on the generated kernels: {completed.stderr[-800:]}")
        return cubin_path.read_bytes()


def compile_cubin(source: str, arch: int) -> bytes:
    """Compile TVM's CUDA source for ``sm_<arch>`` and return the cubin."""
    return device_compiler(arch).compile(source, arch)


def cubin_arch(data: bytes) -> int:
    """The SM version a cubin was compiled for, from its ELF header (ValueError if not one)."""
    if data[:4] != b"\x7fELF" or len(data) < 52:
        raise ValueError("not an ELF file")
    if struct.unpack_from("<H", data, 18)[0] != EM_CUDA:
        raise ValueError("not a CUDA ELF (e_machine is not EM_CUDA)")
    flags = struct.unpack_from("<I", data, 48)[0]
    # CUDA 12.8+ keeps the SM in bits 8-15 (with a flag in bit 26); older cubins in bits 0-7.
    return (flags >> 8) & 0xFF if flags & (1 << 26) else flags & 0xFF


def _cuda_modules(module) -> list:
    found = [module] if module.kind == "cuda" else []
    for child in module.imports:
        found += _cuda_modules(child)
    return found


def cuda_sources(module) -> list[str]:
    """The CUDA C of every CUDA module ``module`` imports (what nvcc compiles)."""
    return [m.inspect_source("") for m in _cuda_modules(module)]


@dataclass(frozen=True)
class CudaEntry:
    """Where one serialized CUDA module sits in the packed imports blob."""

    start: int  # offset of its blob-size field
    end: int
    fmt: bytes
    fmap: bytes
    data: bytes


def find_cuda_entries(payload: bytes) -> list[CudaEntry]:
    """The serialized CUDA modules in a packed imports payload (kind "cuda", then its blob)."""
    marker = _string(b"cuda")
    entries, position = [], 0
    while (kind := payload.find(marker, position)) >= 0:
        position = kind + 1
        start = kind + len(marker)
        if start + 8 > len(payload):
            break
        size = _U64.unpack_from(payload, start)[0]
        blob = payload[start + 8 : start + 8 + size]
        if len(blob) != size or len(blob) < 16:
            continue
        fmt_len = _U64.unpack_from(blob, 0)[0]
        if fmt_len > 16:
            continue  # not a format string: the marker matched inside other data
        fmt = blob[8 : 8 + fmt_len]
        data_len = None
        # The binary is the last field: the first uint64 after the format string that equals
        # the length of the rest (the function table holds only small counts and names, while
        # scanning from the end would match zero padding at the end of a cubin).
        for offset in range(8 + fmt_len, len(blob) - 7):
            rest = len(blob) - offset - 8
            is_length = _U64.unpack_from(blob, offset)[0] == rest and rest > 0
            if is_length and (fmt != b"cubin" or blob[offset + 8 : offset + 12] == b"\x7fELF"):
                data_len = rest
                break
        if data_len is None or fmt not in (b"cuda", b"cu", b"ptx", b"cubin", b"fatbin"):
            continue
        fmap = blob[8 + fmt_len : len(blob) - data_len - 8]
        entries.append(CudaEntry(start, start + 8 + size, fmt, fmap, blob[len(blob) - data_len :]))
        position = start + 8 + size
    return entries


def _with_cubins(payload: bytes, sources: list[str], arch: int) -> tuple[bytes, list[bytes]]:
    """``payload`` with each CUDA module's source replaced by its compiled cubin."""
    entries = find_cuda_entries(payload)
    by_source = {entry.data: entry for entry in entries}
    cubins, patched, cursor = [], [], 0
    for source in sources:
        entry = by_source.get(source.encode())
        if entry is None:
            raise RuntimeError("the CUDA kernels were not found in the module's packed imports")
        cubin = compile_cubin(source, arch)
        cubins.append(cubin)
        blob = _string(b"cubin") + entry.fmap + _string(cubin)
        patched += [payload[cursor : entry.start], _U64.pack(len(blob)), blob]
        cursor = entry.end
    patched.append(payload[cursor:])
    return b"".join(patched), cubins


def _assembly(symbol: str, blob_path: Path) -> str:
    """A .S file that defines ``symbol`` as the blob (works for x86-64 and AArch64 GNU as)."""
    return (
        f'\t.section .rodata.{symbol},"a"\n\t.balign 16\n\t.globl {symbol}\n'
        f'\t.type {symbol}, %object\n{symbol}:\n\t.incbin "{blob_path}"\n'
        f"\t.size {symbol}, .-{symbol}\n"
    )


def export_with_cubin(executable, tvm_target: dict, path: Path, fcompile) -> list[bytes]:
    """Link ``executable`` to ``path`` with its CUDA kernels as cubins; returns the cubins."""
    import numpy as np
    import tvm_ffi

    arch = target_arch(tvm_target)
    sources = cuda_sources(executable.mod)
    if not sources:
        raise RuntimeError("the compiled module has no CUDA kernels")
    pack = tvm_ffi.get_global_func("runtime.ModulePackImportsToTensor")
    symbol = str(tvm_ffi.get_global_func("runtime.ModuleImportsBlobName")())
    cubins: list[bytes] = []

    def pack_imports(module, _is_system_lib, prefix, workspace) -> str:
        packed = bytes(np.asarray(pack(module).numpy(), dtype=np.uint8))
        length = _U64.unpack_from(packed, 0)[0]
        payload, compiled = _with_cubins(packed[8 : 8 + length], sources, arch)
        cubins.extend(compiled)
        blob_path = Path(workspace) / "imports.bin"
        blob_path.write_bytes(_U64.pack(len(payload)) + payload)
        assembly = Path(workspace) / f"{prefix}devc.S"
        assembly.write_text(_assembly(symbol, blob_path))
        return str(assembly)

    executable.mod.export_library(str(path), fcompile=fcompile, fpack_imports=pack_imports)
    return cubins


def embedded_cubins(library: Path) -> list[bytes]:
    """The cubins inside a linked module, read back from its packed imports."""
    data = Path(library).read_bytes()
    return [e.data for e in find_cuda_entries(data) if e.fmt == b"cubin"]
