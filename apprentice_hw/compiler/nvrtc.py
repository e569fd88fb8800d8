"""CUDA 12's NVRTC from PyPI: cubins for the GPUs that CUDA 13's nvcc no longer targets.

CUDA 13 dropped sm_53 (Jetson Nano) and sm_72 (Jetson Xavier), and PyPI has no CUDA 12 nvcc
(``nvidia-cuda-nvcc-cu12`` ships ptxas alone). It does have CUDA 12's runtime compiler:
``nvidia-cuda-nvrtc-cu12`` (libnvrtc, which also emits cubins), with the headers TVM's
kernels include from ``nvidia-cuda-runtime-cu12`` and ``nvidia-cuda-cccl-cu12``; the
``cuda12`` extra installs the three. Called through ctypes: no CUDA driver or GPU needed.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path

# TVM's CUDA header declares the mixed-signedness ``__dp4a`` but defines it only for nvcc
# (``!defined(__CUDACC_RTC__)``); under NVRTC the call would stay an unresolved extern.
DP4A_FOR_NVRTC = """
#if defined(__CUDACC_RTC__) && defined(__CUDA_ARCH__) && (__CUDA_ARCH__ >= 610)
__device__ int __dp4a(unsigned int srcA, int srcB, int c) {
  int ret;
  asm volatile("dp4a.u32.s32 %0, %1, %2, %3;" : "=r"(ret) : "r"(srcA), "r"(srcB), "r"(c));
  return ret;
}
#endif
"""
PACKAGES = {"library": "nvidia.cuda_nvrtc", "runtime": "nvidia.cuda_runtime",
            "cccl": "nvidia.cuda_cccl"}  # fmt: skip


def _package_dir(name: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(name)
    except ModuleNotFoundError:  # the ``nvidia`` namespace itself is missing
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


@dataclass(frozen=True)
class Nvrtc:
    """A loaded libnvrtc, its version and architectures, and the header folders it needs."""

    library: ctypes.CDLL
    version: str
    archs: frozenset[int]
    includes: tuple[Path, ...]

    def compile_cubin(self, source: str, arch: int) -> bytes:
        """Compile TVM's CUDA source for ``sm_<arch>``; a RuntimeError with NVRTC's log."""
        program = ctypes.c_void_p()
        code = (source + DP4A_FOR_NVRTC).encode()
        self._check(self.library.nvrtcCreateProgram(
            ctypes.byref(program), code, b"kernels.cu", 0, None, None), "create")  # fmt: skip
        try:
            options = [f"-arch=sm_{arch}", "-default-device", "-w",
                       *(f"-I{folder}" for folder in self.includes)]  # fmt: skip
            encoded = (ctypes.c_char_p * len(options))(*(o.encode() for o in options))
            status = self.library.nvrtcCompileProgram(program, len(options), encoded)
            if status != 0:
                raise RuntimeError(f"NVRTC failed on the generated kernels: {self._log(program)}")
            size = ctypes.c_size_t()
            self._check(self.library.nvrtcGetCUBINSize(program, ctypes.byref(size)), "size")
            cubin = ctypes.create_string_buffer(size.value)
            self._check(self.library.nvrtcGetCUBIN(program, cubin), "cubin")
            return cubin.raw
        finally:
            self.library.nvrtcDestroyProgram(ctypes.byref(program))

    def _log(self, program) -> str:
        size = ctypes.c_size_t()
        self.library.nvrtcGetProgramLogSize(program, ctypes.byref(size))
        log = ctypes.create_string_buffer(size.value)
        self.library.nvrtcGetProgramLog(program, log)
        return log.value.decode(errors="replace")[-800:]

    @staticmethod
    def _check(status: int, step: str) -> None:
        if status != 0:
            raise RuntimeError(f"NVRTC {step} failed with status {status}")


@functools.cache
def find_nvrtc() -> Nvrtc | None:
    """CUDA 12's NVRTC from the ``cuda12`` extra, or None when it is not installed."""
    folders = {key: _package_dir(name) for key, name in PACKAGES.items()}
    if any(folder is None for folder in folders.values()):
        return None
    libraries = sorted((folders["library"] / "lib").glob("libnvrtc.so.*"))
    if not libraries:
        return None
    library = ctypes.CDLL(str(libraries[0]))
    major, minor = ctypes.c_int(), ctypes.c_int()
    library.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor))
    count = ctypes.c_int()
    library.nvrtcGetNumSupportedArchs(ctypes.byref(count))
    archs = (ctypes.c_int * count.value)()
    library.nvrtcGetSupportedArchs(archs)
    includes = (folders["runtime"] / "include", folders["cccl"] / "include")
    return Nvrtc(library, f"{major.value}.{minor.value}", frozenset(archs), includes)
