"""The report as one document, before any format: titled sections of paragraphs and tables.

``report.md`` and ``report.html`` both render this document (``writer.py``, ``html.py``), so
every section and number exists in both, in the same order: a summary first (target,
precision, accuracy, agreement, size, latency), then accuracy, agreement, memory, layers,
latency, the device sections (FPGA, the board) and the training curve. A number cell knows the
``report.json`` path of the value it shows, which the HTML page carries for tests and tools.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from apprentice_hw.output_steps import OutputComparison
from apprentice_hw.report.fields import FIGURE_FILE, bits_label, format_ms
from apprentice_hw.report_model import LayerRow, Report


@dataclass(frozen=True)
class Cell:
    """One table cell: its text, and for a number from report.json its path and value."""

    text: str
    key: str | None = None
    value: Any = None


@dataclass(frozen=True)
class Table:
    header: tuple[str, ...]
    rows: list[tuple[Cell, ...]]


@dataclass(frozen=True)
class Figure:
    """A PNG the report's directory holds beside ``report.md`` (``file``), and what it shows."""

    file: str
    alt: str


@dataclass(frozen=True)
class Section:
    title: str
    blocks: list[str | Table] = field(default_factory=list)  # paragraphs and tables, in order
    figure: Figure | None = None  # shown after the blocks


@dataclass(frozen=True)
class Document:
    title: str
    sections: list[Section]


def kib(value: float) -> str:
    return f"{value / 1024:,.1f} KiB"


def pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2%}"


def count(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _number(value: float, key: str, text: str | None = None) -> Cell:
    shown = text if text is not None else (f"{value:,}" if isinstance(value, int) else
                                           f"{value:,.0f}")  # fmt: skip
    return Cell(shown, key, value)


def _text(*texts: str) -> tuple[Cell, ...]:
    return tuple(Cell(t) for t in texts)


def report_document(report: Report) -> Document:
    """The whole report as sections, summary first."""
    model, target = report.model, report.target
    if report.is_compiled:
        title = f"apprentice-hw compile: {model.source} on {target.name}"
    else:
        title = f"apprentice-hw build: {model.recipe} on {target.name}"
    sections = [
        _summary(report),
        *([] if report.is_compiled else [_accuracy(report)]),
        _agreement(report),
        _memory(report),
        _layers(report),
        _latency(report),
    ]
    if report.fpga is not None:
        sections.append(_fpga(report))
    if report.deploy is not None:
        sections.append(_board(report))
    if report.training:
        sections.append(_training(report))
    return Document(title, sections)


# -- summary ----------------------------------------------------------------------------------
def _intro(report: Report) -> str:
    model, target = report.model, report.target
    if report.is_compiled:
        integer = model.layers - model.float_layers
        return (
            f"{model.format} model `{model.source}`: {integer} of {model.layers} conv / "
            f"fully connected layers as integer kernels (weight bits "
            f"{bits_label(model.weight_bits)}, activation bits {bits_label(model.act_bits)}). "
            f"Target: {target.description}."
        )
    return (
        f"Student **W{model.weight_bits}A{model.act_bits}** "
        f"({model.weight_preset}; first/last layer weights: {model.first_last}), "
        f"distilled with scheme {model.scheme} from an fp32 teacher on `{model.dataset}`. "
        f"Target: {target.description}."
    )


def _summary(report: Report) -> Section:
    model, acc, checks = report.model, report.accuracy, report.checks
    rows = [_text("target", f"{report.target.name} ({report.target.device}, "
                            f"{report.target.arch})")]  # fmt: skip
    rows.append(_text("precision", f"W{bits_label(model.weight_bits)}"
                                   f"A{bits_label(model.act_bits)}"))  # fmt: skip
    if not report.is_compiled:
        rows.append((Cell("accuracy (top-1, test split)"), Cell(
            f"student {pct(acc.student_top1)}, compiled module {pct(acc.compiled_top1)}, "
            f"fp32 teacher {pct(acc.teacher_top1)}")))  # fmt: skip
    gate = checks.comparison("compiled_vs_brevitas") or checks.comparison("compiled_vs_onnxruntime")
    gate_name = "Brevitas (exact)" if checks.comparison("compiled_vs_brevitas") else "ONNX Runtime"
    if gate is not None:
        rows.append(_text("agreement", f"max {gate.max_diff_steps:g} output steps from "
                                       f"{gate_name}, top-1 agreement "
                                       f"{gate.prediction_agreement:.2%}"))  # fmt: skip
    elif checks.hls_csim is not None:
        verdict = "identical" if checks.hls_csim.exact else (
            f"max {checks.hls_csim.max_diff_steps:g} output steps"
        )  # fmt: skip
        rows.append(_text("agreement", f"C simulation vs ONNX Runtime: {verdict}"))
    weights = report.memory.weights
    size = f"weights {kib(weights.quantized_weight_bytes)}"
    planned = report.memory.planned(1)
    if planned is not None:
        size += f", activations {kib(planned)} (batch 1, planned)"
    rows.append(_text("size", size))
    rows.append(_text("latency (batch 1)", _latency_line(report)))
    blocks: list[str | Table] = [_intro(report)]
    if report.device_code is not None:
        blocks.append(f"Device code: {report.device_code.description}; weights and activations "
                      "below live in GPU memory.")  # fmt: skip
    blocks += [Table(("", ""), rows), f"Execution: {report.execution}"]
    return Section("Summary", blocks, Figure(FIGURE_FILE, "weights and activations, batch 1 and 8"))


def _latency_line(report: Report) -> str:
    latency, estimate = report.latency, report.latency_estimate
    if latency.measured:
        threads = f", {latency.threads} TVM thread{'s' if latency.threads > 1 else ''}" if (
            latency.threads
        ) else ""  # fmt: skip
        shown = f"{format_ms(latency.median_ms)} median, measured here{threads}"
    else:
        shown = f"not measured ({latency.reason})"
    if estimate is not None:
        shown += f"; estimated {format_ms(estimate.ms)}"
    if report.deploy is not None:
        shown += f"; {format_ms(report.deploy.latency_median_ms)} on {report.deploy.board}"
    return shown


# -- accuracy and agreement -------------------------------------------------------------------
def _accuracy(report: Report) -> Section:
    acc = report.accuracy
    rows = [
        _text("fp32 teacher", pct(acc.teacher_top1)),
        _text("student (Brevitas)", pct(acc.student_top1)),
        _text("student (ONNX Runtime, QCDQ)", pct(acc.onnxruntime_top1)),
        _text("student (compiled module)", pct(acc.compiled_top1)),
        *(_text(name.replace("_", " "), pct(value)) for name, value in acc.partial.items()),
    ]
    return Section("Accuracy (test split, top-1)", [Table(("network", "top-1"), rows)])


COMPARISON_HEADER = ("comparison", "max diff (steps)", "identical samples", "within 1 step",
                     "same top-1")  # fmt: skip


def _comparison_row(label: str, check: OutputComparison | None) -> tuple[Cell, ...]:
    if check is None:
        return _text(label, "not run", "", "", "")
    return _text(
        label, f"{check.max_diff_steps:.2f}", f"{check.fraction_exact:.1%}",
        f"{check.fraction_within_one_step:.1%}", f"{check.prediction_agreement:.2%}",
    )  # fmt: skip


def _agreement(report: Report) -> Section:
    checks = report.checks
    comparison = checks.comparison
    step = f"One step = {checks.output_step:.6g} (scale of the output quantizer)"
    if checks.inputs is not None:
        step += f"; {checks.inputs.samples} inputs ({checks.inputs.inputs})"
    if report.is_compiled:
        rows = [_comparison_row("compiled module vs ONNX Runtime",
                                comparison("compiled_vs_onnxruntime"))]  # fmt: skip
        if comparison("compiled_vs_reference"):
            rows.append(_comparison_row("compiled module vs reference outputs",
                                        comparison("compiled_vs_reference")))  # fmt: skip
    else:
        rows = [
            _comparison_row("ONNX Runtime vs Brevitas, float32",
                            comparison("onnxruntime_vs_brevitas")),
            _comparison_row("compiled module vs ONNX Runtime",
                            comparison("compiled_vs_onnxruntime")),
            _comparison_row("compiled module vs Brevitas, exact",
                            comparison("compiled_vs_brevitas")),
            _comparison_row("compiled module vs Brevitas, float32",
                            comparison("compiled_vs_brevitas_float32")),
        ]  # fmt: skip
    return Section("Agreement (max difference in output quantization steps)", [
        f"{step}.", Table(COMPARISON_HEADER, rows),
        f"Compiled module checked: {checks.compiled_module_checked or 'not run'}.",
    ])  # fmt: skip


# -- memory -----------------------------------------------------------------------------------
def _bytes_row(label: str, value: float, key: str, note: str = "") -> tuple[Cell, ...]:
    return (Cell(label), _number(value, key), Cell(f"{kib(value)}{' ' + note if note else ''}"))


def _memory(report: Report) -> Section:
    memory = report.memory
    weights = memory.weights
    rows: list[tuple[Cell, ...]] = []
    if weights.module is not None:
        module = weights.module
        rows += [
            _bytes_row("constants in the compiled module", module.compiled_module_bytes,
                       "memory.weights.compiled_module_bytes", "(all of the below)"),
            _bytes_row("quantized weights in the module", weights.quantized_weight_bytes,
                       "memory.weights.quantized_weight_bytes",
                       f"({module.quantized_vs_trained:.3f}x parameters x bits / 8 = "
                       f"{weights.trained_quantized_bytes:,.0f} B)"),
            _bytes_row("requantization constants (per-channel scales, folded BatchNorm)",
                       module.scale_bytes, "memory.weights.scale_bytes"),
            _bytes_row("other constants (biases, layers left in float)", module.other_bytes,
                       "memory.weights.other_bytes"),
        ]  # fmt: skip
    if weights.fpga is not None:
        rows += [
            _bytes_row("quantized weights on the FPGA (BRAM or logic)",
                       weights.fpga.on_chip_weight_bytes, "memory.weights.on_chip_weight_bytes"),
            _bytes_row("quantized weights of the head on the host",
                       weights.fpga.host_weight_bytes, "memory.weights.host_weight_bytes"),
        ]  # fmt: skip
    rows += [
        _bytes_row("all parameters at trained precision", weights.trained_precision_bytes,
                   "memory.weights.trained_precision_bytes",
                   "(quantized at their bits, rest fp32)"),
        _bytes_row("weights as fp32", weights.fp32_bytes, "memory.weights.fp32_bytes"),
    ]  # fmt: skip
    for batch, value in memory.paper_activation_bytes.items():
        rows.append(_bytes_row(
            f"activations, batch {batch}, conv/FC outputs at their bits (the paper's measure)",
            value, f"memory.paper_activation_bytes.batch_{batch}"))  # fmt: skip
    for plan in memory.activations.values():
        key = f"memory.activations.batch_{plan.batch}"
        rows.append(
            _bytes_row(
                f"activations, batch {plan.batch}, planned peak",
                plan.activation_bytes_planned,
                f"{key}.activation_bytes_planned",
            )
        )
        rows.append(_bytes_row(f"activations, batch {plan.batch}, sum of all tensors",
                               plan.activation_bytes_unplanned,
                               f"{key}.activation_bytes_unplanned"))  # fmt: skip
    if memory.files is not None:
        files = memory.files
        workspace = files.kernel_workspace_bytes_batch_1
        runtime = files.runtime_library_bytes
        peak = memory.planned(1) + workspace
        rows += [
            _bytes_row("kernel workspace, batch 1 (largest kernel's scratch, outside the plan)",
                       workspace, "memory.kernel_workspace_bytes_batch_1"),
            (Cell("peak working memory, batch 1 (planned activations + kernel workspace)"),
             Cell(f"{peak:,}"), Cell(kib(peak))),
            _bytes_row("compiled module file (`model.so`)", files.module_file_bytes,
                       "memory.module_file_bytes"),
            (Cell(f"TVM runtime libraries ({', '.join(runtime)}; {files.runtime_arch} build)"),
             Cell(f"{sum(runtime.values()):,}"), Cell(kib(sum(runtime.values())))),
        ]  # fmt: skip
    return Section("Memory", [Table(("", "bytes", ""), rows)])


# -- layers -----------------------------------------------------------------------------------
LAYER_HEADER = ("layer", "kind", "weights", "output", "MACs", "bit-ops", "strategy",
                "weight bits (stored)", "activation bits in / out", "weight bytes",
                "output bytes (batch 1)")  # fmt: skip


def _layer_row(index: int, layer: LayerRow) -> tuple[Cell, ...]:
    key = f"layers.{index}"
    cost = layer.shape
    bits = (f"{layer.weight_bits} ({layer.storage_bits})" if layer.weight_bits is not None
            else f"float: {layer.reason}")  # fmt: skip
    acts = (f"{layer.act_bits if layer.act_bits is not None else '-'} / "
            f"{cost.output_bits if cost else '-'}")  # fmt: skip

    def costed(name: str) -> Cell:
        value = getattr(cost, name) if cost is not None else None
        return Cell("-") if value is None else _number(value, f"{key}.{name}", count(value))

    return (
        Cell(layer.name), Cell(layer.kind), Cell("x".join(str(d) for d in layer.weight_shape)),
        Cell("x".join(str(d) for d in cost.output_shape) if cost else "-"),
        costed("macs"), costed("bit_operations"), Cell(layer.strategy), Cell(bits), Cell(acts),
        _number(layer.weight_bytes, f"{key}.weight_bytes"), costed("output_bytes_batch_1"),
    )  # fmt: skip


def _layers(report: Report) -> Section:
    rows = [_layer_row(index, layer) for index, layer in enumerate(report.layers)]
    return Section("Layers", [Table(LAYER_HEADER, rows)])


# -- latency ----------------------------------------------------------------------------------
def _latency(report: Report) -> Section:
    latency, estimate = report.latency, report.latency_estimate
    blocks: list[str | Table] = []
    if latency.measured:
        threads = f", {latency.threads} TVM threads" if latency.threads else ""
        blocks.append(Table(("", "ms"), [
            (Cell("median, measured on this machine"),
             _number(latency.median_ms, "latency.median_ms", f"{latency.median_ms:.3f}")),
            (Cell("min"), _number(latency.min_ms, "latency.min_ms", f"{latency.min_ms:.3f}")),
            (Cell("max"), _number(latency.max_ms, "latency.max_ms", f"{latency.max_ms:.3f}")),
        ]))  # fmt: skip
        blocks.append(f"{latency.repeats} runs of {latency.number} calls{threads}.")
    else:
        blocks.append(f"Not measured: {latency.reason or 'unknown'}.")
    if estimate is not None:
        cell = _number(estimate.ms, "latency_estimate.ms", format_ms(estimate.ms))
        if estimate.is_roofline:
            label = (f"estimated (lower bound; {estimate.compute_bound_layers} layers "
                     f"compute-bound, {estimate.memory_bound_layers} memory-bound)")  # fmt: skip
        else:
            label = "estimated"
        blocks += [Table(("", ""), [(Cell(label), cell)]), f"Estimate: {estimate.method}."]
    return Section("Latency (batch 1)", blocks)


# -- device sections --------------------------------------------------------------------------
def _fpga(report: Report) -> Section:
    fpga, check = report.fpga, report.checks.hls_csim
    estimate = fpga.estimate
    verdict = "identical to" if check.exact else f"up to {check.max_diff_steps:g} output steps from"
    blocks: list[str | Table] = [
        f"hls4ml ({fpga.backend}, {fpga.io_type}, {fpga.precision}) C simulation on "
        f"{check.samples} test images: {verdict} ONNX Runtime; {fpga.head}. "
        f"HLS project: `{fpga.hls_project}/`.",
    ]
    if fpga.exactness_warning:
        blocks.append(fpga.exactness_warning)
    blocks.append(
        f"Reuse factor {estimate['reuse_factor']} at {estimate['clock_mhz']:g} MHz: latency "
        f"{estimate['latency_cycles']:,} cycles ({estimate['latency_ms']:.4f} ms), a new image "
        f"every {estimate['interval_cycles']:,} cycles; {estimate['method']}."
    )
    resources = []
    for name, used in estimate["totals"].items():
        share = estimate["utilization"][name]
        resources.append((Cell(name), _number(used, f"fpga.estimate.totals.{name}"),
                          Cell(f"{estimate['budget'][name]:,}"),
                          Cell(f"{share:.1%}" if share is not None else "-")))  # fmt: skip
    blocks.append(Table(("resource", "estimated", "available", "utilization"), resources))
    synthesized = fpga.synthesis
    if synthesized:
        blocks.append(
            f"Vitis HLS C synthesis ({synthesized['source']}): "
            + ", ".join(f"{k} {v:,}" for k, v in synthesized["resources"].items())
            + f"; worst-case latency {synthesized['latency_cycles_worst']:,.0f} cycles at an "
            f"estimated {synthesized['clock_ns']} ns clock."
        )
    layers = [_text(layer["name"], f"{layer['multipliers']:,}", f"{layer['dsps']:,}",
                    f"{layer['luts']:,}", f"{layer['ffs']:,}", f"{layer['bram_18k']:,}",
                    f"{layer['cycles']:,}") for layer in estimate["layers"]]  # fmt: skip
    blocks.append(Table(("layer", "multipliers", "DSP", "LUT", "FF", "BRAM_18K", "cycles"),
                        layers))  # fmt: skip
    return Section(f"FPGA: {fpga.part} (estimated)", blocks)


def _board(report: Report) -> Section:
    deploy = report.deploy
    verdict = "identical to" if deploy.identical else (
        f"up to {deploy.max_diff_steps:g} output steps from"
    )  # fmt: skip
    threads = f", {deploy.threads} TVM threads" if deploy.threads else ""
    rows = [
        (Cell("median"), _number(deploy.latency_median_ms, "deploy.latency_median_ms",
                                 f"{deploy.latency_median_ms:.3f}")),
        (Cell("min"), _number(deploy.latency_min_ms, "deploy.latency_min_ms",
                              f"{deploy.latency_min_ms:.3f}")),
        (Cell("max"), _number(deploy.latency_max_ms, "deploy.latency_max_ms",
                              f"{deploy.latency_max_ms:.3f}")),
        (Cell("stdev"), Cell(f"{deploy.latency_stdev_ms:.3f}")),
    ]  # fmt: skip
    return Section(f"On the board ({deploy.board})", [
        f"{deploy.kind.capitalize()}; {deploy.repeats} runs of {deploy.number} calls{threads}.",
        Table(("", "ms"), rows),
        f"Outputs on {deploy.samples} verification images {verdict} the host build's (max "
        f"{deploy.max_diff_steps:g} output steps); top-1 agreement "
        f"{deploy.top1_agreement:.0%}. Deployed {deploy.when}.",
    ])  # fmt: skip


# -- training ---------------------------------------------------------------------------------
def _training(report: Report) -> Section:
    """Each phase's last epoch, and the whole curve as ``train_curve.png``."""
    from apprentice_hw.report.train_curve import CURVE_FILE

    phases: dict[str, int] = {}
    for index, row in enumerate(report.training):
        phases[row.phase] = index  # the phase's last epoch
    rows = []
    for phase, index in phases.items():
        row = report.training[index]
        top1 = ", ".join(f"{network} {value:.2%}" for network, value in row.test_top1.items())
        key = f"training.{index}"
        rows.append((Cell(phase), _number(row.epoch, f"{key}.epoch"),
                     _number(row.train_loss, f"{key}.train_loss", f"{row.train_loss:.4f}"),
                     Cell(top1)))  # fmt: skip
    epochs = len(report.training)
    return Section(
        "Training",
        [
            f"{epochs} epochs in {len(phases)} phase{'s' if len(phases) > 1 else ''}, in the "
            "order they ran; `train_log.jsonl` holds every epoch's loss terms and test top-1.",
            Table(("phase", "epochs", "last training loss", "last test top-1"), rows),
        ],
        Figure(CURVE_FILE, "training loss and test top-1 per epoch"),
    )
