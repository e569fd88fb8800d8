"""What the steps of a build hand each other (``BuildState``), and a named step (``Step``).

Shared by the pipeline, which runs the steps, and the device backends, which replace some of
them (``Backend.steps``): it sits below both so neither imports the other's internals.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from apprentice_hw.config import Recipe
from apprentice_hw.data import DatasetSplits
from apprentice_hw.hardware import Target
from apprentice_hw.options import BuildOptions
from apprentice_hw.progress import Progress
from apprentice_hw.report_model import Report, ReportParts


@dataclass
class BuildState:
    """The options, the working directory, what the steps produced, timings and the report."""

    options: BuildOptions
    workdir: Path
    progress: Progress
    data: DatasetSplits | None = None
    student: nn.Module | None = None
    onnx_model: Any = None  # onnx.ModelProto (QCDQ)
    ort_outputs: np.ndarray | None = None
    compiled_outputs: np.ndarray | None = None  # the compiled module (or its host twin), test set
    parts: ReportParts = field(default_factory=ReportParts)  # the report's sections so far
    report: Report | None = None  # the finished report (the report step)
    timings: dict[str, float] = field(default_factory=dict)
    device_artifacts: object | None = None  # what a backend's compile step hands its verify step

    @property
    def recipe(self) -> Recipe:
        return self.options.recipe

    @property
    def target(self) -> Target:
        return self.options.target

    @property
    def kernel(self) -> str | None:
        return self.options.kernel

    @property
    def resume(self) -> bool:
        return self.options.resume


@dataclass(frozen=True)
class Step:
    """One named stage of the pipeline."""

    name: str
    title: str
    run: Callable[[BuildState], None]
