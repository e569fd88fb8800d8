"""CPU targets (x86-64, AArch64): channels-last integer kernels with the project's schedules,
tuned or shipped knobs, linked with the host or a cross compiler."""

from __future__ import annotations

from pathlib import Path

from apprentice_hw.backends.base import BACKENDS
from apprentice_hw.backends.compiled import TvmBackend
from apprentice_hw.hardware import Target, find_cross_compiler


class CpuBackend(TvmBackend):
    name = "cpu"
    tunable = True

    def prepare(self, model, target: Target, batch: int = 1, kernel: str | None = None):
        from apprentice_hw.compiler.cpu import lowering_options
        from apprentice_hw.compiler.tvm_build import prepare

        # The CPU kernels read channels-last activations and blocked weights.
        return prepare(model, batch, preference=target.kernels, kernel=kernel,
                       channels_last=True, lowering=lowering_options(target))  # fmt: skip

    def compile(self, mod, target: Target, use_tuning: bool = True, count=None):
        from apprentice_hw.compiler.cpu import compile_cpu

        return compile_cpu(mod, target, use_tuning, count)

    def link(self, executable, target: Target, path: Path) -> Path:
        from apprentice_hw.compiler.tvm_build import link_library

        return link_library(executable, path, find_cross_compiler(target))


BACKENDS.add("cpu", CpuBackend())
