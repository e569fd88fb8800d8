"""The interface every device backend implements, and the registry that picks one per target.

A backend is everything the build, ``compile``, ``verify``, ``tune`` and the CLI do differently
for one kind of device (``Target.device``): how a model is prepared, compiled and linked, what
is checked before any work, how many output steps its module may differ by, which pipeline
steps it replaces, its default quantizer family and its summary lines. Adding a device is
adding one module that registers a :class:`Backend` (plus its row in ``hardware.DEVICES``,
what target files may name); nothing else asks which kind of device a target is.
"""

from __future__ import annotations

from pathlib import Path

from apprentice_hw.build_state import Step
from apprentice_hw.errors import UserError
from apprentice_hw.hardware import Target, find_cross_compiler, host_arch
from apprentice_hw.options import FpgaOptions
from apprentice_hw.registry import Registry
from apprentice_hw.report_model import DeviceCode, Report


class Backend:
    """The default behaviour: a device apprentice-hw cannot compile ONNX models for."""

    name: str = ""
    # The quantizer family a build uses unless the user names one (None: the recipe's), and
    # the note that says so.
    default_quant: str | None = None
    default_quant_note: str = ""
    # Output steps a correct module may differ from the host's exact integer pipeline by.
    output_tolerance_steps: float = 0.0
    # Whether 'apprentice-hw tune' can time this device's kernels.
    tunable: bool = False
    # The report's one-sentence description of how the model executes.
    execution: str = ""

    # -- before any work -------------------------------------------------------------------
    def validate(self, target: Target, fpga: FpgaOptions | None = None) -> None:
        """Fail in one line, before minutes of training, on what this device lacks."""
        find_cross_compiler(target)

    def check_target_file(self, target: Target) -> None:
        """What this device's backend reads from a target file beyond ``hardware``'s checks."""
        return None

    def check_compilable(self, target: Target) -> None:
        """Refuse ``compile`` (a user's ONNX model) where this backend cannot take one."""
        raise UserError(f"{target.name} is a {self.name} target; compile takes CPU and GPU "
                        "targets")  # fmt: skip

    # -- the pipeline ----------------------------------------------------------------------
    def steps(self) -> dict[str, Step]:
        """Pipeline steps this device does its own way, by step name (the rest are shared)."""
        return {}

    # -- compiling -------------------------------------------------------------------------
    def prepare(self, model, target: Target, batch: int = 1, kernel: str | None = None):
        """Canonicalize, import and lower ``model`` (``compiler.PreparedModule``)."""
        self.check_compilable(target)

    def compile(self, mod, target: Target, use_tuning: bool = True, count=None):
        """Compile a prepared Relax module into an executable; ``count`` (a
        ``compiler.schedules.ScheduleCount``), where given, says where schedules came from."""
        self.check_compilable(target)

    def link(self, executable, target: Target, path: Path) -> Path:
        """Link ``executable`` into a shared object at ``path`` (atomically)."""
        self.check_compilable(target)
        return path

    def device_report(self, module: Path) -> DeviceCode | None:
        """A report section on the device code inside the linked module, if it has one."""
        return None

    # -- describing ------------------------------------------------------------------------
    def not_measured_reason(self, target: Target) -> str:
        """Why this machine cannot time the module."""
        return f"the module is built for {target.arch}, this machine is not one"

    def listing_lines(self, target: Target) -> list[str]:
        """Extra ``targets --verbose`` lines for this device."""
        return []

    def runs_here_text(self, target: Target) -> str:
        """The ``targets --verbose`` answer to "can this machine run its modules"."""
        if target.runs_on_this_machine:
            return "yes"
        if target.arch != host_arch():
            return f"no (built for {target.arch}; this machine is {host_arch()})"
        missing = ", ".join(target.missing_isa)
        return f"no (this CPU lacks {missing})" if missing else "no"

    def summary_lines(self, report: Report, out: Path) -> list[str]:
        """The build summary after the accuracy line."""
        return []


BACKENDS: Registry[Backend] = Registry("device backend")
