"""What the backends that compile with TVM (CPU, CUDA) share: checks before any work and the
build summary of a compiled module."""

from __future__ import annotations

from pathlib import Path

from apprentice_hw.backends.base import Backend
from apprentice_hw.errors import UserError
from apprentice_hw.hardware import Target, find_cross_compiler
from apprentice_hw.options import FpgaOptions
from apprentice_hw.report_model import Report


def check_kernel_names(target: Target) -> None:
    """The target file's ``kernels`` list names registered strategies."""
    from apprentice_hw.lowering.strategies import KERNEL_STRATEGIES

    for name in target.kernels:
        if name not in KERNEL_STRATEGIES:
            choices = ", ".join(KERNEL_STRATEGIES.names())
            raise UserError(f"target file {target.source}: unknown kernel strategy '{name}'; "
                            f"choose from {choices}")  # fmt: skip


class TvmBackend(Backend):
    """A device whose modules TVM compiles into one shared object (``model.so``)."""

    execution = (
        "quantized conv2d/dense layers run as integer kernels (int32 accumulation) with "
        "weights stored at trained precision; see 'layers' for each layer's strategy"
    )

    def check_target_file(self, target: Target) -> None:
        check_kernel_names(target)

    def validate(self, target: Target, fpga: FpgaOptions | None = None) -> None:
        from apprentice_hw.compiler.tuning import check_database

        check_kernel_names(target)
        check_database(target)
        find_cross_compiler(target)

    def check_compilable(self, target: Target) -> None:
        return None

    def summary_lines(self, report: Report, out: Path) -> list[str]:
        return compiled_summary_lines(report, out)


def compiled_summary_lines(report: Report, out: Path) -> list[str]:
    """A CPU/GPU build's summary: memory, agreement, latency, bundle."""
    from apprentice_hw.report.fields import format_ms

    weights, memory, checks = report.memory.weights, report.memory, report.checks
    lines = [
        f"  quantized weights in the module {weights.quantized_weight_bytes / 1024:.1f} KiB "
        f"(parameters x bits / 8: {weights.trained_quantized_bytes / 1024:.1f} KiB); "
        f"activations planned {memory.planned(1) / 1024:.1f} KiB (batch 1), "
        f"{memory.planned(8) / 1024:.1f} KiB (batch 8)"
    ]
    others = [
        f"vs {label}: max {checks.comparisons[key].max_diff_steps:.2f} steps"
        for key, label in (("compiled_vs_brevitas", "Brevitas (exact)"),
                           ("compiled_vs_reference", "your reference outputs"))
        if key in checks.comparisons
    ]  # fmt: skip
    lines.append(
        f"  compiled module vs ONNX Runtime: max "
        f"{checks.comparisons['compiled_vs_onnxruntime'].max_diff_steps:.2f} output steps"
        f"{''.join(', ' + other for other in others)}; checked: "
        f"{checks.compiled_module_checked}"
    )
    latency, estimate = report.latency, report.latency_estimate
    estimated = (f"; estimated {format_ms(estimate.ms)} (roofline lower bound)"
                 if estimate is not None else "")  # fmt: skip
    if latency.measured:
        plural = "s" if (latency.threads or 0) > 1 else ""
        threads = f", {latency.threads} thread{plural}" if latency.threads else ""
        lines.append(f"  latency {latency.median_ms:.3f} ms median (batch 1{threads}){estimated}")
    else:
        lines.append(f"  latency not measured: {latency.reason}{estimated}")
    lines.append(
        f"  deploy bundle: {out / 'bundle'} (copy it to the board and run 'python3 run.py "
        f"--verify'; or 'apprentice-hw deploy {out} --tracker HOST:PORT --key KEY')"
    )
    return lines
