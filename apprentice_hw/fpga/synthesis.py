"""Vitis HLS synthesis: run it where Vitis is installed, and read its report into the build's.

Vitis is not on the package registries, so this machine never synthesizes; a user who has it
runs ``apprentice-hw build ... --synthesize`` (or ``vitis_hls -f build_prj.tcl`` in ``hls/``
on another machine and copies the project back). Whenever the C synthesis report
(``csynth.xml``) is in the HLS project, the build's report shows its numbers beside the
estimates, labelled ``synthesized``.
"""

from __future__ import annotations

import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from apprentice_hw.errors import UserError

VITIS_HLS = "vitis_hls"
PROJECT = "myproject"  # hls4ml's default project name
REPORT = Path(f"{PROJECT}_prj") / "solution1" / "syn" / "report" / f"{PROJECT}_csynth.xml"
RESOURCES = {"LUT": "luts", "FF": "ffs", "DSP": "dsps", "BRAM_18K": "bram_18k"}
# hls4ml's build_prj.tcl options: C synthesis only (no C/RTL co-simulation, no export).
SYNTH_ONLY = "reset=1 csim=0 synth=1 cosim=0 validation=0 export=0 vsynth=0"


def synthesize(hls_dir: Path) -> Path:
    """Run Vitis HLS C synthesis on the project; returns the report path."""
    vitis = shutil.which(VITIS_HLS)
    if vitis is None:
        raise UserError(
            f"--synthesize needs {VITIS_HLS} on PATH (Vitis HLS, not installable from the "
            "package registries); without it the build reports estimates, and 'apprentice-hw "
            "report BUILD' reads a synthesis done elsewhere"
        )
    command = [vitis, "-f", "build_prj.tcl", SYNTH_ONLY]
    completed = subprocess.run(command, cwd=hls_dir, capture_output=True, text=True, check=False)
    if completed.returncode != 0 or not (hls_dir / REPORT).exists():
        raise RuntimeError(f"Vitis HLS synthesis failed: {completed.stdout[-800:]}")
    return hls_dir / REPORT


def _number(root: ET.Element, path: str) -> float | None:
    text = root.findtext(path)
    try:
        return float(text) if text is not None else None
    except ValueError:  # "undef" for loops of unknown trip count
        return None


def read_csynth(path: Path) -> dict[str, Any]:
    """Resources, latency and clock from a Vitis HLS ``csynth.xml``."""
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise UserError(f"{path} is not a readable C synthesis report ({exc})") from exc
    used = {
        ours: _number(root, f"AreaEstimates/Resources/{tag}") for tag, ours in RESOURCES.items()
    }
    available = {
        ours: _number(root, f"AreaEstimates/AvailableResources/{tag}")
        for tag, ours in RESOURCES.items()
    }
    latency = "PerformanceEstimates/SummaryOfOverallLatency"
    clock_ns = _number(root, "PerformanceEstimates/SummaryOfTimingAnalysis/EstimatedClockPeriod")
    worst = _number(root, f"{latency}/Worst-caseLatency")
    return {
        "kind": "synthesized",
        "source": str(path),
        "resources": {k: int(v) for k, v in used.items() if v is not None},
        "available": {k: int(v) for k, v in available.items() if v is not None},
        "latency_cycles_best": _number(root, f"{latency}/Best-caseLatency"),
        "latency_cycles_worst": worst,
        "interval_cycles": _number(root, f"{latency}/Interval-max"),
        "clock_ns": clock_ns,
        "latency_ms_worst": worst * clock_ns * 1e-6 if worst and clock_ns else None,
    }


def synthesis_of(build_dir: Path, hls_dir_name: str = "hls") -> dict[str, Any] | None:
    """The synthesis results of a build's HLS project, or None when it was never synthesized."""
    path = build_dir / hls_dir_name / REPORT
    return read_csynth(path) if path.exists() else None
