"""``report.html``: the build report as one self-contained page with the Figure-1 plot inside.

Rendered from the report (``report_model.Report``, like the Markdown), with the PNG embedded
as a data URI so the file can be mailed or opened anywhere. Every number cell carries the path
in ``report.json`` of the value it shows (``data-key``) and its exact value, so a test can
check the page against the data.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

from apprentice_hw.report_model import Report

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 70em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; }
"""


PLAN_ROWS = (
    ("activation_bytes_planned", "planned peak (TVM's static memory plan)"),
    ("activation_bytes_unplanned", "sum of all the compiler's tensors"),
)


def _cell(data: dict[str, Any], key: str) -> str:
    """A number cell for the JSON path ``key`` (dots between keys, integers index lists) of
    ``data``, the report as ``report.json`` holds it."""
    value: Any = data
    for part in key.split("."):
        value = value[int(part)] if isinstance(value, list) else value[part]
    shown = f"{value:,}" if isinstance(value, int) else f"{value:,.6g}"
    return f'<td class="n" data-key="{html.escape(key)}" data-value="{value!r}">{shown}</td>'


def _row(label: str, *cells: str) -> str:
    return f"<tr><th>{html.escape(label)}</th>{''.join(cells)}</tr>"


def render_html(report: Report, figure: Path | None) -> str:
    """The page for ``report``; ``figure`` is the PNG to embed (skipped when None)."""
    model, target = report.model, report.target
    data = report.to_dict()  # the cells name their JSON path
    if report.is_compiled:
        title = f"apprentice-hw compile: {model.source} on {target.name}"
        intro = (
            f"{model.format} model {html.escape(model.source)}: "
            f"{model.layers - model.float_layers} of {model.layers} layers as integer "
            f"kernels; target {html.escape(target.description)}."
        )
    else:
        title = f"apprentice-hw build: {model.recipe} on {target.name}"
        intro = (
            f"Student W{model.weight_bits}A{model.act_bits}, scheme {model.scheme}, "
            f"dataset {html.escape(str(model.dataset))}; target "
            f"{html.escape(target.description)}."
        )
    parts = [
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>",
        f"<p>{intro}</p>",
    ]
    if figure is not None:
        encoded = base64.b64encode(figure.read_bytes()).decode("ascii")
        parts.append(f"<img alt='weights and activations, batch 1 and 8' "
                     f"src='data:image/png;base64,{encoded}'>")  # fmt: skip
    parts.append("<h2>Memory (bytes)</h2><table>")
    for label, key in (
        ("constants in the compiled module", "compiled_module_bytes"),
        ("quantized weights in the module", "quantized_weight_bytes"),
        ("requantization constants", "scale_bytes"),
        ("other constants", "other_bytes"),
        ("quantized weights on the FPGA", "on_chip_weight_bytes"),
        ("quantized weights of the head, on the host", "host_weight_bytes"),
        ("weights as fp32", "fp32_bytes"),
    ):
        if key in data["memory"]["weights"]:  # CPU/GPU modules and FPGA designs differ
            parts.append(_row(label, _cell(data, f"memory.weights.{key}")))
    for batch in report.memory.paper_activation_bytes:
        parts.append(_row(f"activations, batch {batch}, the paper's measure",
                          _cell(data, f"memory.paper_activation_bytes.batch_{batch}")))  # fmt: skip
    for batch in report.memory.activations:
        for what, label in PLAN_ROWS:
            parts.append(_row(f"activations, batch {batch}, {label}",
                              _cell(data, f"memory.activations.batch_{batch}.{what}")))  # fmt: skip
    parts.append("</table><h2>Layers</h2><table><tr><th>layer</th><th>strategy</th>"
                 "<th>MACs</th><th>bit-ops</th><th>weight bytes</th>"
                 "<th>output bytes (batch 1)</th></tr>")  # fmt: skip
    for index, layer in enumerate(data["layers"]):
        cells = [f"<td>{html.escape(layer['strategy'])}</td>"]
        for key in ("macs", "bit_operations", "weight_bytes", "output_bytes_batch_1"):
            cells.append(_cell(data, f"layers.{index}.{key}") if key in layer else "<td>-</td>")
        parts.append(_row(layer["name"], *cells))
    parts.append("</table><h2>Latency (batch 1)</h2>")
    if report.latency.measured:
        parts.append(f"<table>{_row('median ms, measured', _cell(data, 'latency.median_ms'))}"
                     f"{_row('min ms', _cell(data, 'latency.min_ms'))}"
                     f"{_row('max ms', _cell(data, 'latency.max_ms'))}</table>")  # fmt: skip
    else:
        parts.append(f"<p>Not measured: {html.escape(str(report.latency.reason or ''))}.</p>")
    if report.latency_estimate is not None:
        row = _row("ms, estimated (lower bound)", _cell(data, "latency_estimate.ms"))
        parts.append(f"<table>{row}</table><p>{html.escape(report.latency_estimate.method)}</p>")
    if report.deploy is not None:
        parts.append(_deploy_section(report, data))
    if report.fpga is not None:
        parts.append(_fpga_section(report, data))
    parts.append("</body></html>")
    return "\n".join(parts)


def _deploy_section(report: Report, data: dict[str, Any]) -> str:
    """What ``apprentice-hw deploy`` measured on the board."""
    deploy = report.deploy
    rows = [
        _row("median ms, measured on the board", _cell(data, "deploy.latency_median_ms")),
        _row("min ms", _cell(data, "deploy.latency_min_ms")),
        _row("max ms", _cell(data, "deploy.latency_max_ms")),
        _row("max output difference, steps", _cell(data, "deploy.max_diff_steps")),
    ]
    verdict = "identical" if deploy.identical else "different"
    return (
        f"<h2>On the board ({html.escape(deploy.board)})</h2><table>{''.join(rows)}</table>"
        f"<p>{html.escape(deploy.kind)}; outputs {verdict} on {deploy.samples} "
        f"verification images ({html.escape(deploy.when)}).</p>"
    )


def _fpga_section(report: Report, data: dict[str, Any]) -> str:
    """The FPGA resource estimate against the part's budget."""
    fpga = report.fpga
    rows = [_row(f"{key}, estimated (of {fpga.estimate['budget'][key]:,})",
                 _cell(data, f"fpga.estimate.totals.{key}"))
            for key in fpga.estimate["totals"]]  # fmt: skip
    rows.append(_row("latency cycles, estimated", _cell(data, "fpga.estimate.latency_cycles")))
    return (
        f"<h2>FPGA: {html.escape(fpga.part)} (estimated)</h2><table>{''.join(rows)}</table>"
        f"<p>Reuse factor {fpga.estimate['reuse_factor']}; {html.escape(fpga.head)}.</p>"
    )
