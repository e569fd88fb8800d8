"""Writing a report's files: ``report.json`` (the data), ``report.md``, the Figure-1 plot and
``report.html``, all rendered from the same dict."""

from __future__ import annotations

from pathlib import Path

from apprentice_hw.atomic import write_json, write_text
from apprentice_hw.report.fields import FIGURE_FILE, HTML_FILE, figure_title
from apprentice_hw.report.figure import build_bars, plot_footprint
from apprentice_hw.report.html import render_html
from apprentice_hw.report.writer import render_markdown
from apprentice_hw.report_model import Report


def write_report(report: Report, directory: Path) -> None:
    """Write report.json, report.md, the Figure-1 plot and report.html, each atomically."""
    write_json(directory / "report.json", report.to_dict())
    write_text(directory / "report.md", render_markdown(report))
    figure = plot_footprint(build_bars(report), figure_title(report), directory / FIGURE_FILE)
    write_text(directory / HTML_FILE, render_html(report, figure))
