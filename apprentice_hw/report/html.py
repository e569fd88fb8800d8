"""``report.html``: the build report as one self-contained page with its plots inside.

The same document as ``report.md`` (``document.py``: every section, in the same order), with
each section's PNG (the Figure-1 plot, the training curve) embedded as a data URI so the
file can be mailed or opened anywhere, readable on a phone (wide tables scroll) and a desktop.
Every number cell from ``report.json`` carries the path of its value (``data-key``) and the
exact value, so a test can check the page against the data.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

from apprentice_hw.report.document import Cell, Figure, Table, report_document
from apprentice_hw.report_model import Report

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1em auto; max-width: 70em; color: #222;
       padding: 0 1em; line-height: 1.4; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; margin: 0.5em 0 1em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; height: auto; }
@media (max-width: 40em) { body { font-size: 14px; } th, td { padding: 0.2em 0.35em; } }
"""


def _inline(text: str) -> str:
    """A paragraph's text as HTML: escaped, with Markdown's ``code`` and **bold** kept."""
    escaped = html.escape(text)
    escaped = re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", escaped)


def _cell(cell: Cell) -> str:
    if cell.key is None:
        return f"<td>{_inline(cell.text)}</td>"
    key, value = html.escape(cell.key), html.escape(repr(cell.value))
    return f'<td class="n" data-key="{key}" data-value="{value}">{html.escape(cell.text)}</td>'


def _table(table: Table) -> str:
    head = "".join(f"<th>{html.escape(name)}</th>" for name in table.header)
    rows = "".join("<tr>" + "".join(_cell(cell) for cell in row) + "</tr>" for row in table.rows)
    head = f"<tr>{head}</tr>" if any(table.header) else ""  # no empty header row
    return f"<div class='scroll'><table>{head}{rows}</table></div>"


def _figure(figure: Figure, directory: Path | None) -> str:
    """The section's PNG inlined, or nothing when the directory does not hold it."""
    path = None if directory is None else directory / figure.file
    if path is None or not path.is_file():
        return ""
    encoded = base64.b64encode(path.read_bytes()).decode("ascii")
    return f"<img alt='{html.escape(figure.alt)}' src='data:image/png;base64,{encoded}'>"


def render_html(report: Report, directory: Path | None) -> str:
    """The page for ``report``, with the figures ``directory`` holds (None: no figures)."""
    document = report_document(report)
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>{html.escape(document.title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{html.escape(document.title)}</h1>",
    ]
    for section in document.sections:
        parts.append(f"<h2>{html.escape(section.title)}</h2>")
        for block in section.blocks:
            parts.append(_table(block) if isinstance(block, Table) else f"<p>{_inline(block)}</p>")
        if section.figure is not None:
            parts.append(_figure(section.figure, directory))
    parts.append("</body></html>")
    return "\n".join(part for part in parts if part)
