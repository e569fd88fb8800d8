"""Small formatting helpers every report renderer shares (Markdown, HTML, figure, compare)."""

from __future__ import annotations

from apprentice_hw.report_model import Report

FIGURE_FILE = "footprint.png"
HTML_FILE = "report.html"


def format_ms(value: float) -> str:
    """A duration given in ms, readable also when it is microseconds (GPU estimates)."""
    return f"{value:.3f} ms" if value >= 0.1 else f"{value * 1000:.3g} us"


def figure_title(report: Report) -> str:
    """The footprint figure's title: the student and its data, or the compiled model's file."""
    model = report.model
    if report.is_compiled:
        return f"{model.source}: weights and activations"
    return f"{model.student} on {model.dataset}: weights and activations"


def bits_label(value: int | list[int]) -> str:
    """A build's one bit width, or a compiled model's list of them (``2/8``; ``-``: none)."""
    if isinstance(value, list):
        return "/".join(str(v) for v in value) or "-"
    return str(value)


def precision_label(report: Report) -> str:
    """``W2A8``, or a compiled model's widths (``W2/8A4/8``)."""
    return f"W{bits_label(report.model.weight_bits)}A{bits_label(report.model.act_bits)}"
