"""A build's options as one frozen, validated, serialisable value.

``BuildOptions`` is what ``apprentice_hw.build`` and ``apprentice-hw build`` run: the recipe
(already resolved, with any overrides applied), the target, where the build goes and how, and
the device options of FPGA targets (``FpgaOptions``). It checks its own fields on
construction; the checks that need the registries of later layers (kernel strategy names, the
recipe's dataset, model and scheme names) run in ``pipeline.validate`` before any work. Its
``identity()`` is what an interrupted build must match to be resumed.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from apprentice_hw.config import Recipe
from apprentice_hw.errors import UserError
from apprentice_hw.hardware import Target, get_target


@dataclass(frozen=True)
class FpgaOptions:
    """How an FPGA target's design is sized: a fixed reuse factor, a throughput goal, or the
    fastest design that fits (neither); ``synthesize`` runs Vitis HLS C synthesis too."""

    reuse: int | None = None  # hls4ml reuse factor
    fps: float | None = None  # images per second to reach with the fewest resources
    synthesize: bool = False

    def __post_init__(self) -> None:
        if self.reuse is not None and (isinstance(self.reuse, bool) or self.reuse < 1):
            raise UserError(f"--reuse must be at least 1, got {self.reuse}")
        if self.fps is not None and not (math.isfinite(self.fps) and self.fps > 0):
            raise UserError(f"--fps must be a positive number of images per second, got "
                            f"{self.fps:g}")  # fmt: skip
        if self.reuse is not None and self.fps is not None:
            raise UserError("give --reuse or --fps, not both: --fps picks the reuse factor")

    @property
    def is_default(self) -> bool:
        return self == FpgaOptions()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FpgaOptions:
        return cls(**{key: data.get(key, getattr(cls(), key)) for key in cls.__dataclass_fields__})


@dataclass(frozen=True)
class BuildOptions:
    """Everything one build needs besides progress output."""

    recipe: Recipe
    target: Target
    out: Path  # the build directory (see ``default_output_dir``)
    kernel: str | None = None  # force a kernel strategy where it applies (None: the target's)
    force: bool = False  # replace an existing build directory
    resume: bool = False  # continue an interrupted build of ``out`` with the same options
    fpga: FpgaOptions = field(default_factory=FpgaOptions)
    # TVM worker threads the latency is measured with and the bundle runs with; None: the
    # faster of 1 and every core, measured at build time. Not part of the resume identity.
    threads: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.recipe, Recipe):
            raise UserError(f"a build needs a Recipe, got {type(self.recipe).__name__}")
        if not isinstance(self.target, Target):
            raise UserError(f"a build needs a Target, got {type(self.target).__name__}")
        if not isinstance(self.out, Path):
            object.__setattr__(self, "out", Path(self.out))
        if self.kernel is not None and not isinstance(self.kernel, str):
            raise UserError(f"kernel must be a strategy name, got {self.kernel!r}")
        check_threads(self.threads)
        if not isinstance(self.fpga, FpgaOptions):
            raise UserError(f"fpga options must be FpgaOptions, got {type(self.fpga).__name__}")
        if not self.fpga.is_default and not self.target.kind.takes_fpga_options:
            raise UserError(
                f"--reuse, --fps and --synthesize apply to FPGA targets; {self.target.name} is "
                f"a {self.target.device} target"
            )

    def identity(self) -> dict[str, Any]:
        """What must match for an interrupted build to be resumed: recipe, target, options."""
        return {"recipe": self.recipe.to_dict(), "target": self.target.name,
                "kernel": self.kernel, "device_options": self.fpga.to_dict()}  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (the target by its file, so a custom target file round-trips)."""
        return {"recipe": self.recipe.to_dict(), "target": str(self.target.source),
                "out": str(self.out), "kernel": self.kernel, "force": self.force,
                "resume": self.resume, "fpga": self.fpga.to_dict(),
                "threads": self.threads}  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BuildOptions:
        """Inverse of :meth:`to_dict`."""
        try:
            return cls(
                recipe=Recipe.from_dict(data["recipe"]), target=get_target(data["target"]),
                out=Path(data["out"]), kernel=data.get("kernel"),
                force=bool(data.get("force", False)), resume=bool(data.get("resume", False)),
                fpga=FpgaOptions.from_dict(data.get("fpga") or {}), threads=data.get("threads"),
            )  # fmt: skip
        except (KeyError, TypeError) as exc:
            raise UserError(f"build options are incomplete or from another version: {exc}") from exc


MAX_THREADS = 1024


def check_threads(threads: int | None) -> None:
    """``--threads``: a whole number of TVM workers, or None (choose by measuring)."""
    if threads is None:
        return
    if isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= MAX_THREADS:
        raise UserError(f"--threads must be a whole number from 1 to {MAX_THREADS}, got "
                        f"{threads!r}")  # fmt: skip


def default_output_dir(recipe: Recipe, target: Target) -> Path:
    """``build/<recipe>-<target>-w<bits>a<bits>`` under the current directory."""
    return Path("build") / f"{recipe.name}-{target.name}-w{recipe.weight_bits}a{recipe.act_bits}"
