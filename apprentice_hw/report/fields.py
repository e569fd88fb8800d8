"""Small formatting helpers every report renderer shares (Markdown, HTML, figure, compare)."""

from __future__ import annotations

from typing import Any

FIGURE_FILE = "footprint.png"
HTML_FILE = "report.html"


def format_ms(value: float) -> str:
    """A duration given in ms, readable also when it is microseconds (GPU estimates)."""
    return f"{value:.3f} ms" if value >= 0.1 else f"{value * 1000:.3g} us"


def is_compiled(report: dict[str, Any]) -> bool:
    """Whether ``report`` is of ``compile`` (a user's ONNX model) rather than ``build``."""
    return "source" in report["model"]


def figure_title(report: dict[str, Any]) -> str:
    """The footprint figure's title: the student and its data, or the compiled model's file."""
    model = report["model"]
    if is_compiled(report):
        return f"{model['source']}: weights and activations"
    return f"{model['student']} on {model['dataset']}: weights and activations"


def bits_label(value: int | list[int]) -> str:
    """A build's one bit width, or a compiled model's list of them (``2/8``; ``-``: none)."""
    if isinstance(value, list):
        return "/".join(str(v) for v in value) or "-"
    return str(value)
