"""Builds side by side: one column per build (e.g. W8 vs W4 vs W2, or one model per target)."""

from __future__ import annotations

from typing import Any

from apprentice_hw.report.fields import bits_label
from apprentice_hw.report.figure import BATCHES, FootprintBar, build_bars

# (row label, function of a report) for the comparison table, in display order.
ROWS: tuple[tuple[str, Any], ...] = (
    ("target", lambda r: r["target"]["name"]),
    ("precision", lambda r: f"W{bits_label(r['model']['weight_bits'])}"
                            f"A{bits_label(r['model']['act_bits'])}"),
    ("student top-1", lambda r: r["accuracy"].get("student_top1")),
    ("compiled module top-1", lambda r: r["accuracy"].get("compiled_top1")),
    # FPGA designs have no module and plan no activation memory: their cells read "-".
    ("module constants (bytes)", lambda r: r["memory"]["weights"].get("compiled_module_bytes")),
    ("quantized weights (bytes)", lambda r: r["memory"]["weights"]["quantized_weight_bytes"]),
    ("weights as fp32 (bytes)", lambda r: r["memory"]["weights"]["fp32_bytes"]),
    *(
        (f"activations b{b}, paper's measure (bytes)",
         lambda r, b=b: r["memory"].get("paper_activation_bytes", {}).get(f"batch_{b}"))
        for b in BATCHES
    ),
    *(
        (f"activations b{b}, planned (bytes)",
         lambda r, b=b: r["memory"]["activations"].get(f"batch_{b}", {})
         .get("activation_bytes_planned"))
        for b in BATCHES
    ),
    ("latency b1 median (ms)", lambda r: r["latency"].get("median_ms")),
    ("latency b1 estimated (ms)", lambda r: r.get("latency_estimate", {}).get("ms")),
)  # fmt: skip


def comparison(reports: list[tuple[str, dict]]) -> dict[str, Any]:
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


def comparison_bars(reports: list[tuple[str, dict]]) -> list[FootprintBar]:
    """fp32 of the first build, then each build at its precision, labelled by build name."""
    bars = [build_bars(reports[0][1])[0]]
    for name, report in reports:
        own = build_bars(report)[1]
        bars.append(FootprintBar(f"{name}\n{own.label}", own.weight_bytes, own.activation_bytes))
    return bars
