"""The typed report (``report_model``) holds exactly what ``report.json`` held before it."""

from __future__ import annotations

import copy
import json

import pytest
from report_schema import SCHEMAS, assert_report_unchanged, schema

from apprentice_hw.report_model import Report, ReportParts

RECORDED = json.loads((SCHEMAS / "build-x86.values.json").read_text())["report"]


def test_a_recorded_report_round_trips_exactly():
    assert Report.from_dict(copy.deepcopy(RECORDED)).to_dict() == RECORDED
    expected = json.loads((SCHEMAS / "build-x86.json").read_text())
    assert schema(RECORDED) == expected


@pytest.mark.parametrize(
    "change",
    [
        lambda r: r["memory"]["weights"].pop("scale_bytes"),
        lambda r: r["checks"].update(extra_check={"samples": 1}),
        lambda r: r["latency"].update(median_ms="fast"),
    ],
)
def test_a_changed_report_fails_the_schema_check(tmp_path, change):
    report = copy.deepcopy(RECORDED)
    change(report)
    path = tmp_path / "report.json"
    path.write_text(json.dumps(report))
    with pytest.raises((AssertionError, KeyError, TypeError)):  # the schema, or the model
        assert_report_unchanged(path, "build-x86")


def test_progress_of_an_interrupted_build_round_trips():
    report = Report.from_dict(copy.deepcopy(RECORDED))
    parts = ReportParts(
        accuracy=report.accuracy, checks=report.checks, layers=report.layers,
        memory=report.memory, latency=report.latency, latency_estimate=report.latency_estimate,
        training=report.training,
    )  # fmt: skip
    again = ReportParts.from_dict(json.loads(json.dumps(parts.to_dict())))
    assert again == parts
    assert again.report(report.model, report.target, report.execution) == report
    with pytest.raises(ValueError, match="lacks checks"):
        ReportParts().report(report.model, report.target, report.execution)


def test_sections_read_as_attributes():
    report = Report.from_dict(copy.deepcopy(RECORDED))
    assert not report.is_compiled and report.model.weight_bits == RECORDED["model"]["weight_bits"]
    assert (
        report.memory.planned(8)
        == (RECORDED["memory"]["activations"]["batch_8"]["activation_bytes_planned"])
    )
    exact = report.checks.comparison("compiled_vs_brevitas")
    assert exact.max_diff_steps == RECORDED["checks"]["compiled_vs_brevitas"]["max_diff_steps"]
    assert [layer.name for layer in report.layers] == [row["name"] for row in RECORDED["layers"]]


def test_the_page_and_the_markdown_hold_the_same_sections():
    import html
    import re

    from apprentice_hw.report.html import render_html
    from apprentice_hw.report.writer import render_markdown

    report = Report.from_dict(copy.deepcopy(RECORDED))
    markdown = [line[3:] for line in render_markdown(report).splitlines() if line.startswith("## ")]
    page = render_html(report, None)
    assert [html.unescape(t) for t in re.findall(r"<h2>(.*?)</h2>", page)] == markdown
    assert markdown[0] == "Summary"
    assert markdown[1:] == ["Accuracy (test split, top-1)",
                            "Agreement (max difference in output quantization steps)", "Memory",
                            "Layers", "Latency (batch 1)", "Training"]  # fmt: skip
    assert "<meta name='viewport'" in page  # readable on a phone
