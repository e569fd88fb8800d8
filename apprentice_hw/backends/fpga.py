"""FPGA targets: an hls4ml dataflow project checked in C simulation, with resource and latency
estimates; the pooling head runs on the board's processor. Built from a recipe only."""

from __future__ import annotations

from pathlib import Path

from apprentice_hw.backends.base import BACKENDS, Backend
from apprentice_hw.build_state import Step
from apprentice_hw.errors import UserError
from apprentice_hw.hardware import Target, find_cross_compiler
from apprentice_hw.options import FpgaOptions
from apprentice_hw.report_model import Report


class FpgaBackend(Backend):
    name = "fpga"
    # Fixed-point hardware reproduces power-of-two scales exactly, and nothing else.
    default_quant = "po2"
    default_quant_note = (
        "FPGA target: power-of-two quantizers (--quant po2), so the design is bit-exact; pass "
        "--quant to choose another family"
    )
    execution = (
        "the FPGA part runs as hls4ml fixed-point dataflow (io_stream) with weights at "
        "trained precision; the pooling head runs on the host; see 'fpga'"
    )

    def validate(self, target: Target, fpga: FpgaOptions | None = None) -> None:
        from apprentice_hw.fpga.build import check_ready
        from apprentice_hw.fpga.estimate import FpgaSpec

        check_ready(fpga or FpgaOptions())
        FpgaSpec.from_target(target)
        find_cross_compiler(target)

    def check_compilable(self, target: Target) -> None:
        raise UserError(
            f"compile does not take FPGA targets yet ({target.name}); 'apprentice-hw build' "
            "makes hls4ml projects from a recipe"
        )

    def steps(self) -> dict[str, Step]:
        from apprentice_hw.fpga import build

        return {step.name: step for step in (
            Step("compile", "convert with hls4ml and compile the C simulation", build.step_compile),
            Step("verify", "check the C simulation against ONNX Runtime", build.step_verify),
            Step("bundle", "write the deploy bundle", build.step_bundle),
        )}  # fmt: skip

    def not_measured_reason(self, target: Target) -> str:
        from apprentice_hw.fpga.build import NOT_MEASURED

        return NOT_MEASURED

    def runs_here_text(self, target: Target) -> str:
        return "C simulation only (hls4ml); no FPGA here"

    def summary_lines(self, report: Report, out: Path) -> list[str]:
        """C simulation check, estimates, HLS project."""
        check, fpga = report.checks.hls_csim, report.fpga
        estimate = fpga.estimate
        verdict = "identical" if check.exact else f"max {check.max_diff_steps:g} output steps"
        used = ", ".join(
            f"{key} {value:,} ({estimate['utilization'][key]:.1%})"
            for key, value in estimate["totals"].items()
        )
        return [
            f"  hls4ml C simulation vs ONNX Runtime on {check.samples} test images: {verdict}",
            f"  estimated on {fpga.part} at reuse factor {estimate['reuse_factor']}: {used}",
            f"  estimated latency {estimate['latency_cycles']:,} cycles = "
            f"{estimate['latency_ms']:.4f} ms at {estimate['clock_mhz']:g} MHz, "
            f"{estimate['images_per_second']:,.0f} images/s",
            f"  HLS project: {out / fpga.hls_project} ({fpga.head})",
        ]


BACKENDS.add("fpga", FpgaBackend())
