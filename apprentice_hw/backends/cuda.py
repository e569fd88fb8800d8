"""NVIDIA GPUs (CUDA, Jetson): the dp4a conv schedule with DLight for the rest, device code
compiled to a cubin for the target's GPU and embedded in the module."""

from __future__ import annotations

from pathlib import Path

from apprentice_hw.backends.base import BACKENDS
from apprentice_hw.backends.compiled import TvmBackend
from apprentice_hw.errors import UserError
from apprentice_hw.hardware import Target, find_cross_compiler
from apprentice_hw.options import FpgaOptions
from apprentice_hw.report_model import DeviceCode


class CudaBackend(TvmBackend):
    name = "cuda"
    # GPU kernels accumulate the same integers but may contract the float64 requantization
    # differently: one output step, as for any two correct integer pipelines.
    output_tolerance_steps = 1.0

    def validate(self, target: Target, fpga: FpgaOptions | None = None) -> None:
        from apprentice_hw.compiler.cuda import check_device_compiler

        check_device_compiler(target.tvm, target.name)
        super().validate(target, fpga)

    def prepare(self, model, target: Target, batch: int = 1, kernel: str | None = None):
        from apprentice_hw.compiler.tvm_build import prepare

        # The dp4a schedule reads NCHW; GPUs divide (no FMA division) and requantize in float64.
        lowering = {"fma_division": False, "proven_requantization": False}
        return prepare(model, batch, preference=target.kernels, kernel=kernel,
                       channels_last=False, lowering=lowering)  # fmt: skip

    def compile(self, mod, target: Target, use_tuning: bool = True, count=None):
        import tvm

        from apprentice_hw.compiler.gpu_schedules import cuda_pipeline

        tvm_target = target.tvm_target()
        pipeline = cuda_pipeline(tvm.target.Target(tvm_target))
        return tvm.compile(mod, tvm_target, relax_pipeline=pipeline)

    def link(self, executable, target: Target, path: Path) -> Path:
        from apprentice_hw.compiler import cuda
        from apprentice_hw.compiler.tvm_build import link_library

        def with_cubin(executable, so_path: Path, fcompile) -> None:
            cuda.export_with_cubin(executable, target.tvm, so_path, fcompile)

        return link_library(executable, path, find_cross_compiler(target), export=with_cubin)

    def device_report(self, module: Path) -> DeviceCode:
        """What GPU code the linked module carries, read back from the file itself."""
        from apprentice_hw.compiler.cuda import cubin_arch, device_compiler, embedded_cubins

        cubins = embedded_cubins(module)
        arch_numbers = sorted({cubin_arch(c) for c in cubins})
        archs = [f"sm_{arch}" for arch in arch_numbers]
        compiler = ", ".join(sorted({device_compiler(arch).name for arch in arch_numbers}))
        size = sum(len(c) for c in cubins)
        return DeviceCode(
            format="cubin", archs=archs, cubins=len(cubins), bytes=size, compiler=compiler,
            description=f"{len(cubins)} cubin for {', '.join(archs)} ({size / 1024:.0f} KiB, "
            f"{compiler}) inside {module.name}",
        )  # fmt: skip

    def not_measured_reason(self, target: Target) -> str:
        return f"the module needs an NVIDIA GPU ({target.tvm['arch']}); none is reachable here"

    def listing_lines(self, target: Target) -> list[str]:
        from apprentice_hw.compiler.cuda import check_device_compiler

        try:
            found = f"{check_device_compiler(target.tvm, target.name).name} on this machine"
        except UserError as exc:
            found = f"none on this machine: {exc}"
        return [f"device code: {found}"]


BACKENDS.add("cuda", CudaBackend())
