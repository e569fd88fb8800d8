"""Writing a report's files: ``report.json`` (the data), ``report.md``, the Figure-1 plot, the
training curve and ``report.html``, all rendered from the same report."""

from __future__ import annotations

from pathlib import Path

from apprentice_hw.atomic import write_json, write_text
from apprentice_hw.report.fields import FIGURE_FILE, HTML_FILE, figure_title
from apprentice_hw.report.figure import build_bars, plot_footprint
from apprentice_hw.report.html import render_html
from apprentice_hw.report.train_curve import CURVE_FILE, curve_title, plot_training_curve
from apprentice_hw.report.writer import render_markdown
from apprentice_hw.report_model import Report


def write_report(report: Report, directory: Path) -> None:
    """Write report.json, report.md, the plots (Figure 1, the training curve) and report.html,
    each atomically; the plots come from the report alone, so a rewritten report redraws them."""
    write_json(directory / "report.json", report.to_dict())
    write_text(directory / "report.md", render_markdown(report))
    plot_footprint(build_bars(report), figure_title(report), directory / FIGURE_FILE)
    if report.training:
        plot_training_curve(report.training, curve_title(report.model.recipe),
                            directory / CURVE_FILE)  # fmt: skip
    write_text(directory / HTML_FILE, render_html(report, directory))
