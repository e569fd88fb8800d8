"""Builds side by side: one column per build (e.g. W8 vs W4 vs W2, or one model per target)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from apprentice_hw.report.fields import precision_label
from apprentice_hw.report.figure import BATCHES, FootprintBar, build_bars
from apprentice_hw.report_model import Report

# (row label, function of a report) for the comparison table, in display order.
ROWS: tuple[tuple[str, Callable[[Report], Any]], ...] = (
    ("target", lambda r: r.target.name),
    ("precision", precision_label),
    ("student top-1", lambda r: r.accuracy.student_top1),
    ("compiled module top-1", lambda r: r.accuracy.compiled_top1),
    # FPGA designs have no module and plan no activation memory: their cells read "-".
    ("module constants (bytes)",
     lambda r: r.memory.weights.module.compiled_module_bytes if r.memory.weights.module else None),
    ("quantized weights (bytes)", lambda r: r.memory.weights.quantized_weight_bytes),
    ("weights as fp32 (bytes)", lambda r: r.memory.weights.fp32_bytes),
    *(
        (f"activations b{b}, paper's measure (bytes)",
         lambda r, b=b: r.memory.paper_activation_bytes.get(b))
        for b in BATCHES
    ),
    *(
        (f"activations b{b}, planned (bytes)", lambda r, b=b: r.memory.planned(b))
        for b in BATCHES
    ),
    ("latency b1 median (ms)", lambda r: r.latency.median_ms),
    ("latency b1 estimated (ms)",
     lambda r: r.latency_estimate.ms if r.latency_estimate is not None else None),
)  # fmt: skip


def comparison(reports: list[tuple[str, Report]]) -> dict[str, Any]:
    """The comparison as data: build names and one value per build for every row."""
    return {
        "builds": [name for name, _ in reports],
        "rows": {label: [value(report) for _, report in reports] for label, value in ROWS},
    }


def _shown(label: str, value: Any) -> str:
    if value is None:
        return "-"
    if "top-1" in label:
        return f"{value:.2%}"
    if label.endswith("(ms)"):
        return f"{value:.3f}"
    if label.endswith("(bytes)"):
        return f"{value:,.0f}"
    return str(value)


def render_comparison(data: dict[str, Any]) -> str:
    header = "| | " + " | ".join(data["builds"]) + " |"
    lines = [header, "|---" * (len(data["builds"]) + 1) + "|"]
    for label, values in data["rows"].items():
        lines.append(f"| {label} | " + " | ".join(_shown(label, v) for v in values) + " |")
    return "\n".join(lines)


def comparison_bars(reports: list[tuple[str, Report]]) -> list[FootprintBar]:
    """fp32 of the first build, then each build at its precision, labelled by build name."""
    bars = [build_bars(reports[0][1])[0]]
    for name, report in reports:
        own = build_bars(report)[1]
        bars.append(FootprintBar(f"{name}\n{own.label}", own.weight_bytes, own.activation_bytes))
    return bars
