"""``report.md``: the report document (``document.py``) as Markdown.

Rendered from the same report object as ``report.json`` and ``report.html``, so the three
never disagree and every section is in each.
"""

from __future__ import annotations

from apprentice_hw.report.document import Document, Table, report_document
from apprentice_hw.report_model import Report


def _table(table: Table) -> list[str]:
    lines = ["| " + " | ".join(table.header) + " |", "|" + "---|" * len(table.header)]
    lines += ["| " + " | ".join(cell.text for cell in row) + " |" for row in table.rows]
    return lines


def render_document(document: Document) -> str:
    lines = [f"# {document.title}", ""]
    for section in document.sections:
        lines += [f"## {section.title}", ""]
        for block in section.blocks:
            lines += [*(_table(block) if isinstance(block, Table) else [block]), ""]
        if section.figure is not None:
            lines += [f"![{section.figure.alt}]({section.figure.file})", ""]
    return "\n".join(lines)


def render_markdown(report: Report) -> str:
    """A readable summary of ``report`` (what ``report.json`` holds)."""
    return render_document(report_document(report))
