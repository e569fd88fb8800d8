"""Build reports: footprint numbers and the JSON / Markdown writers."""

from apprentice_hw.report.files import write_report
from apprentice_hw.report.footprint import WeightFootprint, weight_footprint
from apprentice_hw.report.writer import render_markdown

__all__ = ["WeightFootprint", "render_markdown", "weight_footprint", "write_report"]
