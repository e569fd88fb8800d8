"""Writers for ``report.json`` (the data) and ``report.md`` (the same data, for people).

The Markdown is rendered from the JSON dict alone, so the two can never disagree.
"""

from __future__ import annotations

from typing import Any

from apprentice_hw.report.fields import bits_label, format_ms, is_compiled


def _kib(value: float) -> str:
    return f"{value / 1024:,.1f} KiB"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2%}"


def _count(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _check_row(label: str, check: dict[str, Any] | None, reason: str = "") -> str:
    if not check:
        return f"| {label} | not run{': ' + reason if reason else ''} | | | |"
    return (
        f"| {label} | {check['max_diff_steps']:.2f} | {check['fraction_exact']:.1%} "
        f"| {check['fraction_within_one_step']:.1%} "
        f"| {check['prediction_agreement']:.2%} |"
    )


def _device_code_lines(report: dict[str, Any]) -> list[str]:
    """A GPU build's device code, where its weights and activations live."""
    if not report.get("device_code"):
        return []
    return [f"Device code: {report['device_code']['description']}; weights and activations "
            "below live in GPU memory.", ""]  # fmt: skip


def _build_header(report: dict[str, Any]) -> list[str]:
    """Title, student, accuracy and agreement of a trained build."""
    model, target, acc = report["model"], report["target"], report["accuracy"]
    checks = report["checks"]
    return [
        f"# apprentice-hw build: {model['recipe']} on {target['name']}",
        "",
        f"Student **W{model['weight_bits']}A{model['act_bits']}** "
        f"({model['weight_preset']}; first/last layer weights: {model['first_last']}), "
        f"distilled with scheme {model['scheme']} from an fp32 teacher on `{model['dataset']}`. "
        f"Target: {target['description']}.",
        "",
        *_device_code_lines(report),
        "## Accuracy (test split, top-1)",
        "",
        "| network | top-1 |",
        "|---|---|",
        f"| fp32 teacher | {_pct(acc['teacher_top1'])} |",
        f"| student (Brevitas) | {_pct(acc['student_top1'])} |",
        f"| student (ONNX Runtime, QCDQ) | {_pct(acc['onnxruntime_top1'])} |",
        f"| student (compiled module) | {_pct(acc.get('compiled_top1'))} |",
        "",
        "## Agreement (max difference in output quantization steps)",
        "",
        f"One step = {checks['output_step']:.6g} (scale of the output quantizer).",
        "",
        "| comparison | max diff (steps) | identical samples | within 1 step | same top-1 |",
        "|---|---|---|---|---|",
        _check_row("ONNX Runtime vs Brevitas, float32", checks["onnxruntime_vs_brevitas"]),
        _check_row("compiled module vs ONNX Runtime", checks.get("compiled_vs_onnxruntime")),
        _check_row("compiled module vs Brevitas, exact", checks.get("compiled_vs_brevitas")),
        _check_row(
            "compiled module vs Brevitas, float32", checks.get("compiled_vs_brevitas_float32")
        ),
        "",
    ]


def _compiled_header(report: dict[str, Any]) -> list[str]:
    """Title, source model and agreement of a compiled user model."""
    model, target, checks = report["model"], report["target"], report["checks"]
    integer = model["layers"] - model["float_layers"]
    return [
        f"# apprentice-hw compile: {model['source']} on {target['name']}",
        "",
        f"{model['format']} model `{model['source']}`: {integer} of {model['layers']} conv / "
        f"fully connected layers as integer kernels (weight bits "
        f"{bits_label(model['weight_bits'])}, activation bits {bits_label(model['act_bits'])}). "
        f"Target: {target['description']}.",
        "",
        *_device_code_lines(report),
        "## Agreement (max difference in output quantization steps)",
        "",
        f"One step = {checks['output_step']:.6g} (scale of the output quantizer); "
        f"{checks['samples']} inputs ({checks['inputs']}).",
        "",
        "| comparison | max diff (steps) | identical samples | within 1 step | same top-1 |",
        "|---|---|---|---|---|",
        _check_row("compiled module vs ONNX Runtime", checks.get("compiled_vs_onnxruntime")),
        *(
            [_check_row("compiled module vs reference outputs", checks["compiled_vs_reference"])]
            if checks.get("compiled_vs_reference")
            else []
        ),
        "",
    ]


def render_markdown(report: dict[str, Any]) -> str:
    """A readable summary of ``report`` (the dict written to ``report.json``)."""
    memory, checks = report["memory"], report["checks"]
    weights = memory["weights"]
    lines = _compiled_header(report) if is_compiled(report) else _build_header(report)
    lines += [
        f"Compiled module checked: {checks.get('compiled_module_checked', 'not run')}.",
        "",
        "## Memory",
        "",
        "| | bytes | |",
        "|---|---|---|",
        *(
            _module_weight_rows(weights)
            if "compiled_module_bytes" in weights
            else _fpga_weight_rows(weights)
        ),
    ]
    lines += [
        f"| all parameters at trained precision | {weights['trained_precision_bytes']:,.0f} "
        f"| {_kib(weights['trained_precision_bytes'])} (quantized at their bits, rest fp32) |",
        f"| weights as fp32 | {weights['fp32_bytes']:,} | {_kib(weights['fp32_bytes'])} |",
    ]  # fmt: skip
    lines += _memory_and_rest(report)
    return "\n".join(lines)


def _module_weight_rows(weights: dict[str, Any]) -> list[str]:
    """The compiled module's constants (CPU and GPU builds)."""
    return [
        f"| constants in the compiled module | {weights['compiled_module_bytes']:,} "
        f"| {_kib(weights['compiled_module_bytes'])} (all of the below) |",
        f"| quantized weights in the module | {weights['quantized_weight_bytes']:,} "
        f"| {_kib(weights['quantized_weight_bytes'])} "
        f"({weights['quantized_vs_trained']:.3f}x parameters x bits / 8 = "
        f"{weights['trained_quantized_bytes']:,.0f} B) |",
        f"| requantization constants (per-channel scales, folded BatchNorm) "
        f"| {weights['scale_bytes']:,} "
        f"| {_kib(weights['scale_bytes'])} |",
        f"| other constants (biases, layers left in float) | {weights['other_bytes']:,} "
        f"| {_kib(weights['other_bytes'])} |",
    ]


def _fpga_weight_rows(weights: dict[str, Any]) -> list[str]:
    """Where an FPGA build keeps its weights: in the fabric, or with the head on the host."""
    return [
        f"| quantized weights on the FPGA (BRAM or logic) | {weights['on_chip_weight_bytes']:,.0f} "
        f"| {_kib(weights['on_chip_weight_bytes'])} |",
        f"| quantized weights of the head on the host | {weights['host_weight_bytes']:,.0f} "
        f"| {_kib(weights['host_weight_bytes'])} |",
    ]


def _memory_and_rest(report: dict[str, Any]) -> list[str]:
    """Activation rows, layers, latency and the device sections of the Markdown report."""
    memory, latency = report["memory"], report["latency"]
    lines: list[str] = []
    for key, value in memory.get("paper_activation_bytes", {}).items():
        lines.append(
            f"| activations, {key.replace('_', ' ')}, conv/FC outputs at their bits "
            f"(the paper's measure) | {value:,.0f} | {_kib(value)} |"
        )
    for act in memory["activations"].values():
        lines.append(
            f"| activations, batch {act['batch']}, planned peak | "
            f"{act['activation_bytes_planned']:,} | {_kib(act['activation_bytes_planned'])} |"
        )
        lines.append(
            f"| activations, batch {act['batch']}, sum of all tensors | "
            f"{act['activation_bytes_unplanned']:,} | {_kib(act['activation_bytes_unplanned'])} |"
        )
    if "kernel_workspace_bytes_batch_1" in memory:
        workspace = memory["kernel_workspace_bytes_batch_1"]
        module_file = memory["module_file_bytes"]
        runtime = {k: v for k, v in memory["runtime_library_bytes"].items() if k != "arch"}
        peak = memory["activations"]["batch_1"]["activation_bytes_planned"] + workspace
        lines += [
            f"| kernel workspace, batch 1 (largest kernel's scratch, outside the plan) "
            f"| {workspace:,} | {_kib(workspace)} |",
            f"| peak working memory, batch 1 (planned activations + kernel workspace) "
            f"| {peak:,} | {_kib(peak)} |",
            f"| compiled module file (`model.so`) | {module_file:,} | {_kib(module_file)} |",
            f"| TVM runtime libraries ({', '.join(runtime)}; "
            f"{memory['runtime_library_bytes']['arch']} build) | {sum(runtime.values()):,} "
            f"| {_kib(sum(runtime.values()))} |",
        ]
    lines += [
        "",
        "## Layers",
        "",
        "| layer | kind | weights | output | MACs | bit-ops | strategy | weight bits (stored) "
        "| activation bits in / out | weight bytes | output bytes (batch 1) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for layer in report.get("layers", []):
        shape = "x".join(str(d) for d in layer["weight_shape"])
        bits = (
            f"{layer['weight_bits']} ({layer['storage_bits']})"
            if layer["weight_bits"] is not None
            else f"float: {layer['reason']}"
        )
        output = "x".join(str(d) for d in layer.get("output_shape", [])) or "-"
        acts = (
            f"{layer['act_bits'] if layer['act_bits'] is not None else '-'} / "
            f"{layer.get('output_bits', '-')}"
        )
        lines.append(
            f"| {layer['name']} | {layer['kind']} | {shape} | {output} "
            f"| {_count(layer.get('macs'))} | {_count(layer.get('bit_operations'))} "
            f"| {layer['strategy']} | {bits} | {acts} | {layer['weight_bytes']:,} "
            f"| {_count(layer.get('output_bytes_batch_1'))} |"
        )
    lines += ["", "## Latency (batch 1)", ""]
    if latency.get("kind") == "measured":
        lines.append(
            f"Measured on this machine: median **{latency['median_ms']:.3f} ms** "
            f"(min {latency['min_ms']:.3f}, max {latency['max_ms']:.3f}, "
            f"{latency['repeats']} runs of {latency['number']} calls)."
        )
    else:
        lines.append(f"Not measured: {latency.get('reason', 'unknown')}.")
    estimate = report.get("latency_estimate")
    if estimate and "compute_bound_layers" in estimate:
        lines += ["", f"Estimated (lower bound; {estimate['method']}): "
                  f"**{format_ms(estimate['ms'])}** ({estimate['compute_bound_layers']} layers "
                  f"compute-bound, {estimate['memory_bound_layers']} memory-bound)."]  # fmt: skip
    elif estimate:
        lines += ["", f"Estimated ({estimate['method']}): **{format_ms(estimate['ms'])}**."]
    if report.get("fpga"):
        lines += _fpga_section(report["fpga"], report["checks"])
    deploy = report.get("deploy")
    if deploy:
        verdict = (
            "identical to"
            if deploy["identical"]
            else (f"up to {deploy['max_diff_steps']:g} output steps from")
        )
        lines += [
            "", f"## On the board ({deploy['board']})", "",
            f"{deploy['kind'].capitalize()}: median **{deploy['latency_median_ms']:.3f} "
            f"ms** (min {deploy['latency_min_ms']:.3f}, max {deploy['latency_max_ms']:.3f}, "
            f"stdev {deploy['latency_stdev_ms']:.3f}; {deploy['repeats']} runs of "
            f"{deploy['number']} calls). Outputs on {deploy['samples']} verification images "
            f"{verdict} the host build's; top-1 agreement {deploy['top1_agreement']:.0%}. "
            f"Deployed {deploy['when']}.",
        ]  # fmt: skip
    lines += ["", f"Execution: {report['execution']}", ""]
    return lines


def _fpga_section(fpga: dict[str, Any], checks: dict[str, Any]) -> list[str]:
    """The FPGA part: C simulation check and the resource estimate against the part."""
    estimate = fpga["estimate"]
    check = checks["hls_csim_vs_onnxruntime"]
    verdict = (
        "identical to"
        if check["exact"]
        else (f"up to {check['max_diff_steps']:g} output steps from")
    )
    lines = [
        "", f"## FPGA: {fpga['part']} (estimated)", "",
        f"hls4ml ({fpga['backend']}, {fpga['io_type']}, {fpga['precision']}) C simulation on "
        f"{check['samples']} test images: {verdict} ONNX Runtime; {fpga['head']}. "
        f"HLS project: `{fpga['hls_project']}/`.",
        *(["", fpga["exactness_warning"]] if fpga.get("exactness_warning") else []),
        "", f"Reuse factor {estimate['reuse_factor']} at {estimate['clock_mhz']:g} MHz: "
        f"latency {estimate['latency_cycles']:,} cycles ({estimate['latency_ms']:.4f} ms), a new "
        f"image every {estimate['interval_cycles']:,} cycles; {estimate['method']}.",
        "", "| resource | estimated | available | utilization |", "|---|---|---|---|",
    ]  # fmt: skip
    for key, used in estimate["totals"].items():
        share = estimate["utilization"][key]
        shown = f"{share:.1%}" if share is not None else "-"
        lines.append(f"| {key} | {used:,} | {estimate['budget'][key]:,} | {shown} |")
    synthesized = fpga.get("synthesis")
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
