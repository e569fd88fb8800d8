"""``report.md``: the report (``report_model.Report``, what ``report.json`` holds) for people.

The Markdown is rendered from the same report object as the JSON, so the two never disagree.
"""

from __future__ import annotations

from apprentice_hw.output_steps import OutputComparison
from apprentice_hw.report.fields import bits_label, format_ms
from apprentice_hw.report_model import (
    Checks,
    DeploySection,
    FpgaSection,
    LayerRow,
    Report,
    WeightMemory,
)


def _kib(value: float) -> str:
    return f"{value / 1024:,.1f} KiB"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2%}"


def _count(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _check_row(label: str, check: OutputComparison | None, reason: str = "") -> str:
    if check is None:
        return f"| {label} | not run{': ' + reason if reason else ''} | | | |"
    return (
        f"| {label} | {check.max_diff_steps:.2f} | {check.fraction_exact:.1%} "
        f"| {check.fraction_within_one_step:.1%} "
        f"| {check.prediction_agreement:.2%} |"
    )


def _device_code_lines(report: Report) -> list[str]:
    """A GPU build's device code, where its weights and activations live."""
    if report.device_code is None:
        return []
    return [f"Device code: {report.device_code.description}; weights and activations "
            "below live in GPU memory.", ""]  # fmt: skip


AGREEMENT_TABLE = (
    "| comparison | max diff (steps) | identical samples | within 1 step | same top-1 |",
    "|---|---|---|---|---|",
)


def _build_header(report: Report) -> list[str]:
    """Title, student, accuracy and agreement of a trained build."""
    model, target, acc, checks = report.model, report.target, report.accuracy, report.checks
    comparison = checks.comparison
    return [
        f"# apprentice-hw build: {model.recipe} on {target.name}",
        "",
        f"Student **W{model.weight_bits}A{model.act_bits}** "
        f"({model.weight_preset}; first/last layer weights: {model.first_last}), "
        f"distilled with scheme {model.scheme} from an fp32 teacher on `{model.dataset}`. "
        f"Target: {target.description}.",
        "",
        *_device_code_lines(report),
        "## Accuracy (test split, top-1)",
        "",
        "| network | top-1 |",
        "|---|---|",
        f"| fp32 teacher | {_pct(acc.teacher_top1)} |",
        f"| student (Brevitas) | {_pct(acc.student_top1)} |",
        f"| student (ONNX Runtime, QCDQ) | {_pct(acc.onnxruntime_top1)} |",
        f"| student (compiled module) | {_pct(acc.compiled_top1)} |",
        "",
        "## Agreement (max difference in output quantization steps)",
        "",
        f"One step = {checks.output_step:.6g} (scale of the output quantizer).",
        "",
        *AGREEMENT_TABLE,
        _check_row("ONNX Runtime vs Brevitas, float32", comparison("onnxruntime_vs_brevitas")),
        _check_row("compiled module vs ONNX Runtime", comparison("compiled_vs_onnxruntime")),
        _check_row("compiled module vs Brevitas, exact", comparison("compiled_vs_brevitas")),
        _check_row(
            "compiled module vs Brevitas, float32", comparison("compiled_vs_brevitas_float32")
        ),
        "",
    ]


def _compiled_header(report: Report) -> list[str]:
    """Title, source model and agreement of a compiled user model."""
    model, target, checks = report.model, report.target, report.checks
    integer = model.layers - model.float_layers
    inputs = checks.inputs
    reference = checks.comparison("compiled_vs_reference")
    return [
        f"# apprentice-hw compile: {model.source} on {target.name}",
        "",
        f"{model.format} model `{model.source}`: {integer} of {model.layers} conv / "
        f"fully connected layers as integer kernels (weight bits "
        f"{bits_label(model.weight_bits)}, activation bits {bits_label(model.act_bits)}). "
        f"Target: {target.description}.",
        "",
        *_device_code_lines(report),
        "## Agreement (max difference in output quantization steps)",
        "",
        f"One step = {checks.output_step:.6g} (scale of the output quantizer); "
        f"{inputs.samples} inputs ({inputs.inputs}).",
        "",
        *AGREEMENT_TABLE,
        _check_row("compiled module vs ONNX Runtime", checks.comparison("compiled_vs_onnxruntime")),
        *([_check_row("compiled module vs reference outputs", reference)] if reference else []),
        "",
    ]


def render_markdown(report: Report) -> str:
    """A readable summary of ``report`` (what ``report.json`` holds)."""
    weights = report.memory.weights
    lines = _compiled_header(report) if report.is_compiled else _build_header(report)
    lines += [
        f"Compiled module checked: {report.checks.compiled_module_checked or 'not run'}.",
        "",
        "## Memory",
        "",
        "| | bytes | |",
        "|---|---|---|",
        *(_module_weight_rows(weights) if weights.module else _fpga_weight_rows(weights)),
    ]
    lines += [
        f"| all parameters at trained precision | {weights.trained_precision_bytes:,.0f} "
        f"| {_kib(weights.trained_precision_bytes)} (quantized at their bits, rest fp32) |",
        f"| weights as fp32 | {weights.fp32_bytes:,} | {_kib(weights.fp32_bytes)} |",
    ]  # fmt: skip
    lines += _memory_and_rest(report)
    return "\n".join(lines)


def _module_weight_rows(weights: WeightMemory) -> list[str]:
    """The compiled module's constants (CPU and GPU builds)."""
    module = weights.module
    return [
        f"| constants in the compiled module | {module.compiled_module_bytes:,} "
        f"| {_kib(module.compiled_module_bytes)} (all of the below) |",
        f"| quantized weights in the module | {weights.quantized_weight_bytes:,} "
        f"| {_kib(weights.quantized_weight_bytes)} "
        f"({module.quantized_vs_trained:.3f}x parameters x bits / 8 = "
        f"{weights.trained_quantized_bytes:,.0f} B) |",
        f"| requantization constants (per-channel scales, folded BatchNorm) "
        f"| {module.scale_bytes:,} "
        f"| {_kib(module.scale_bytes)} |",
        f"| other constants (biases, layers left in float) | {module.other_bytes:,} "
        f"| {_kib(module.other_bytes)} |",
    ]


def _fpga_weight_rows(weights: WeightMemory) -> list[str]:
    """Where an FPGA build keeps its weights: in the fabric, or with the head on the host."""
    fpga = weights.fpga
    return [
        f"| quantized weights on the FPGA (BRAM or logic) | {fpga.on_chip_weight_bytes:,.0f} "
        f"| {_kib(fpga.on_chip_weight_bytes)} |",
        f"| quantized weights of the head on the host | {fpga.host_weight_bytes:,.0f} "
        f"| {_kib(fpga.host_weight_bytes)} |",
    ]


def _memory_and_rest(report: Report) -> list[str]:
    """Activation rows, layers, latency and the device sections of the Markdown report."""
    memory = report.memory
    lines: list[str] = []
    for batch, value in memory.paper_activation_bytes.items():
        lines.append(
            f"| activations, batch {batch}, conv/FC outputs at their bits "
            f"(the paper's measure) | {value:,.0f} | {_kib(value)} |"
        )
    for plan in memory.activations.values():
        lines.append(
            f"| activations, batch {plan.batch}, planned peak | "
            f"{plan.activation_bytes_planned:,} | {_kib(plan.activation_bytes_planned)} |"
        )
        lines.append(
            f"| activations, batch {plan.batch}, sum of all tensors | "
            f"{plan.activation_bytes_unplanned:,} | {_kib(plan.activation_bytes_unplanned)} |"
        )
    if memory.files is not None:
        files = memory.files
        workspace = files.kernel_workspace_bytes_batch_1
        runtime = files.runtime_library_bytes
        peak = memory.planned(1) + workspace
        lines += [
            f"| kernel workspace, batch 1 (largest kernel's scratch, outside the plan) "
            f"| {workspace:,} | {_kib(workspace)} |",
            f"| peak working memory, batch 1 (planned activations + kernel workspace) "
            f"| {peak:,} | {_kib(peak)} |",
            f"| compiled module file (`model.so`) | {files.module_file_bytes:,} "
            f"| {_kib(files.module_file_bytes)} |",
            f"| TVM runtime libraries ({', '.join(runtime)}; {files.runtime_arch} build) "
            f"| {sum(runtime.values()):,} | {_kib(sum(runtime.values()))} |",
        ]
    lines += [
        "",
        "## Layers",
        "",
        "| layer | kind | weights | output | MACs | bit-ops | strategy | weight bits (stored) "
        "| activation bits in / out | weight bytes | output bytes (batch 1) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [_layer_line(layer) for layer in report.layers]
    lines += ["", "## Latency (batch 1)", ""]
    latency = report.latency
    if latency.measured:
        threads = f", {latency.threads} TVM threads" if latency.threads else ""
        lines.append(
            f"Measured on this machine: median **{latency.median_ms:.3f} ms** "
            f"(min {latency.min_ms:.3f}, max {latency.max_ms:.3f}, "
            f"{latency.repeats} runs of {latency.number} calls{threads})."
        )
    else:
        lines.append(f"Not measured: {latency.reason or 'unknown'}.")
    estimate = report.latency_estimate
    if estimate is not None and estimate.is_roofline:
        lines += ["", f"Estimated (lower bound; {estimate.method}): "
                  f"**{format_ms(estimate.ms)}** ({estimate.compute_bound_layers} layers "
                  f"compute-bound, {estimate.memory_bound_layers} memory-bound)."]  # fmt: skip
    elif estimate is not None:
        lines += ["", f"Estimated ({estimate.method}): **{format_ms(estimate.ms)}**."]
    if report.fpga is not None:
        lines += _fpga_section(report.fpga, report.checks)
    if report.deploy is not None:
        lines += _deploy_section(report.deploy)
    lines += ["", f"Execution: {report.execution}", ""]
    return lines


def _layer_line(layer: LayerRow) -> str:
    shape = "x".join(str(d) for d in layer.weight_shape)
    bits = (
        f"{layer.weight_bits} ({layer.storage_bits})"
        if layer.weight_bits is not None
        else f"float: {layer.reason}"
    )
    cost = layer.shape
    output = "x".join(str(d) for d in cost.output_shape) if cost else "-"
    acts = (
        f"{layer.act_bits if layer.act_bits is not None else '-'} / "
        f"{cost.output_bits if cost else '-'}"
    )
    return (
        f"| {layer.name} | {layer.kind} | {shape} | {output or '-'} "
        f"| {_count(cost.macs if cost else None)} "
        f"| {_count(cost.bit_operations if cost else None)} "
        f"| {layer.strategy} | {bits} | {acts} | {layer.weight_bytes:,} "
        f"| {_count(cost.output_bytes_batch_1 if cost else None)} |"
    )


def _deploy_section(deploy: DeploySection) -> list[str]:
    """What ``apprentice-hw deploy`` measured on the board."""
    verdict = (
        "identical to"
        if deploy.identical
        else (f"up to {deploy.max_diff_steps:g} output steps from")
    )
    return [
        "", f"## On the board ({deploy.board})", "",
        f"{deploy.kind.capitalize()}: median **{deploy.latency_median_ms:.3f} "
        f"ms** (min {deploy.latency_min_ms:.3f}, max {deploy.latency_max_ms:.3f}, "
        f"stdev {deploy.latency_stdev_ms:.3f}; {deploy.repeats} runs of "
        f"{deploy.number} calls{f', {deploy.threads} TVM threads' if deploy.threads else ''}). "
        f"Outputs on {deploy.samples} verification images "
        f"{verdict} the host build's; top-1 agreement {deploy.top1_agreement:.0%}. "
        f"Deployed {deploy.when}.",
    ]  # fmt: skip


def _fpga_section(fpga: FpgaSection, checks: Checks) -> list[str]:
    """The FPGA part: C simulation check and the resource estimate against the part."""
    estimate = fpga.estimate
    check = checks.hls_csim
    verdict = (
        "identical to" if check.exact else (f"up to {check.max_diff_steps:g} output steps from")
    )
    lines = [
        "", f"## FPGA: {fpga.part} (estimated)", "",
        f"hls4ml ({fpga.backend}, {fpga.io_type}, {fpga.precision}) C simulation on "
        f"{check.samples} test images: {verdict} ONNX Runtime; {fpga.head}. "
        f"HLS project: `{fpga.hls_project}/`.",
        *(["", fpga.exactness_warning] if fpga.exactness_warning else []),
        "", f"Reuse factor {estimate['reuse_factor']} at {estimate['clock_mhz']:g} MHz: "
        f"latency {estimate['latency_cycles']:,} cycles ({estimate['latency_ms']:.4f} ms), a new "
        f"image every {estimate['interval_cycles']:,} cycles; {estimate['method']}.",
        "", "| resource | estimated | available | utilization |", "|---|---|---|---|",
    ]  # fmt: skip
    for key, used in estimate["totals"].items():
        share = estimate["utilization"][key]
        shown = f"{share:.1%}" if share is not None else "-"
        lines.append(f"| {key} | {used:,} | {estimate['budget'][key]:,} | {shown} |")
    synthesized = fpga.synthesis
    if synthesized:
        lines += ["", f"Vitis HLS C synthesis ({synthesized['source']}): "
                  + ", ".join(f"{k} {v:,}" for k, v in synthesized["resources"].items())
                  + f"; worst-case latency {synthesized['latency_cycles_worst']:,.0f} cycles "
                  f"at an estimated {synthesized['clock_ns']} ns clock."]  # fmt: skip
    lines += ["", "| layer | multipliers | DSP | LUT | FF | BRAM_18K | cycles |",
              "|---|---|---|---|---|---|---|"]  # fmt: skip
    for layer in estimate["layers"]:
        lines.append(f"| {layer['name']} | {layer['multipliers']:,} | {layer['dsps']:,} "
                     f"| {layer['luts']:,} | {layer['ffs']:,} | {layer['bram_18k']:,} "
                     f"| {layer['cycles']:,} |")  # fmt: skip
    return lines
