"""The build steps of an FPGA target: hls4ml project, C simulation check, estimates.

They replace the compile, verify and bundle steps of the CPU/GPU pipeline (the FPGA backend's
``steps``, ``backends/fpga.py``); data, training, export and the report are shared. The report keeps
the CPU/GPU format: per-layer rows, a memory section, ``latency_estimate`` (labelled estimated),
plus an ``fpga`` section with the resource estimate against the part's budget.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from apprentice_hw.artifacts import QONNX_FILE, REPORT_BATCHES
from apprentice_hw.build_state import BuildState
from apprentice_hw.errors import UserError
from apprentice_hw.options import FpgaOptions
from apprentice_hw.report_model import (
    CsimCheck,
    FpgaPlacement,
    FpgaSection,
    Latency,
    LatencyEstimate,
    LayerRow,
    LayerShape,
    MemorySection,
    WeightMemory,
    shape_fields,
)

HLS_DIR = "hls"
CHECK_IMAGES = 100  # the C simulation is checked against ONNX Runtime on this many test images
EXACT_QUANT = "po2"  # power-of-two scales: what fixed-point arithmetic reproduces exactly
NOT_MEASURED = "no FPGA is reachable here (the C simulation checks values, not time)"


@dataclass
class FpgaDesign:
    """What the compile step hands the verify step: the compiled hls4ml model and the split."""

    hls_model: Any
    split: Any  # hls.Split


def check_ready(options: FpgaOptions) -> None:
    """Fail before training: no hls4ml, no Vitis HLS for --synthesize (FpgaOptions checked
    --reuse and --fps when it was made)."""
    import shutil

    from apprentice_hw.fpga.synthesis import VITIS_HLS, synthesize

    if options.synthesize and shutil.which(VITIS_HLS) is None:
        synthesize(Path("."))  # raises the one-line error that says what is missing
    try:
        import hls4ml  # noqa: F401
    except ImportError as exc:
        raise UserError(
            "FPGA targets need hls4ml; install it with pip install 'apprentice-hw[fpga]' "
            "(or '.[fpga]' in a checkout)"
        ) from exc


def exactness_warning(recipe) -> str | None:
    """Why the fixed-point design may not reproduce the model exactly, or None."""
    if recipe.quant != EXACT_QUANT:
        return (
            f"warning: quantizer family '{recipe.quant}' has non-power-of-two scales, which "
            "fixed-point hardware only approximates; the C simulation may differ from ONNX "
            f"Runtime by an output step or more (use --quant {EXACT_QUANT} for a bit-exact build)"
        )
    return None


def _weight_shape(cost) -> list[int]:
    filters = cost.output_shape[0]
    if cost.kind == "dense":
        return [filters, cost.parameters // filters]
    channels = cost.input_shape[0]
    kernel = round(math.sqrt(cost.parameters / (filters * channels)))
    return [filters, channels, kernel, kernel]


def _layer_row(cost, on_fpga: bool) -> LayerRow:
    """A report row like a CPU/GPU build's, so the Markdown, HTML and plot read it as usual."""
    return LayerRow(
        name=cost.name, kind=cost.kind, weight_shape=_weight_shape(cost),
        strategy="hls4ml (FPGA fabric)" if on_fpga else "host (ONNX Runtime)",
        weight_bits=cost.weight_bits, storage_bits=cost.weight_bits, act_bits=cost.act_bits,
        weight_bytes=cost.weight_bytes, reason=None, shape=LayerShape(**shape_fields(cost)),
    )  # fmt: skip


def step_compile(state: BuildState) -> None:
    from apprentice_hw.fpga import hls, synthesis
    from apprentice_hw.fpga.estimate import FpgaSpec, choose_reuse
    from apprentice_hw.report import weight_footprint
    from apprentice_hw.report.layers import activation_bytes, layer_costs

    warning = exactness_warning(state.recipe)
    if warning:
        state.progress.message(f"    {warning}")
    spec = FpgaSpec.from_target(state.target)
    with tempfile.TemporaryDirectory(prefix="apprentice-hw-split-") as scratch:
        split = hls.split(state.workdir / QONNX_FILE, state.onnx_model, Path(scratch))
    costs = layer_costs(state.onnx_model)
    on_fpga = [cost for cost in costs if cost.name not in split.head_layers]
    options = state.options.fpga
    design = choose_reuse(on_fpga, spec, options.reuse, options.fps)
    state.progress.message(
        f"    reuse factor {design.reuse_factor} on {spec.part}: estimated "
        + ", ".join(f"{k} {v:,}/{spec.budget()[k]:,}" for k, v in design.totals.items())
    )
    hls_model = hls.compile_body(split, state.workdir / HLS_DIR, design.reuse_factor,
                                 spec.part, spec.clock_mhz)  # fmt: skip
    state.device_artifacts = FpgaDesign(hls_model, split)
    if options.synthesize:
        state.progress.message("    running Vitis HLS C synthesis (minutes to hours)")
        synthesis.synthesize(state.workdir / HLS_DIR)
    estimate = design.to_dict()
    parts = state.parts
    parts.layers = [_layer_row(c, c.name not in split.head_layers) for c in costs]
    on_chip = sum(cost.weight_bytes for cost in on_fpga)
    total = sum(c.weight_bytes for c in costs)
    weights = WeightMemory.from_footprint(
        weight_footprint(state.student), total, fpga=FpgaPlacement(on_chip, total - on_chip)
    )
    parts.memory = MemorySection(
        weights,
        activations={},  # streamed through FIFOs and line buffers, not planned in memory
        paper_activation_bytes={b: activation_bytes(costs, b) for b in REPORT_BATCHES},
    )
    parts.latency_estimate = LatencyEstimate(
        ms=estimate["latency_ms"],
        method=f"{estimate['method']}; {estimate['latency_cycles']:,} cycles at "
        f"{spec.clock_mhz:g} MHz, a new image every {estimate['interval_cycles']:,} cycles",
    )
    head = (
        "the pooling head (global average pool, classifier, output quantizer) runs on the host "
        "with ONNX Runtime: hls4ml cannot take it (see apprentice_hw/fpga/hls.py)"
        if split.head is not None else "the whole model is on the FPGA"
    )  # fmt: skip
    parts.fpga = FpgaSection(
        part=spec.part, hls_project=HLS_DIR, backend=hls.HLS_BACKEND, io_type=hls.IO_TYPE,
        precision=hls.HLS_PRECISION, head=head, exactness_warning=warning, estimate=estimate,
        synthesis=synthesis.synthesis_of(state.workdir, HLS_DIR),
    )  # fmt: skip
    if not design.fits:
        state.progress.message(
            f"    warning: reuse factor {design.reuse_factor} exceeds 80% of {spec.part}'s "
            "resources (see the report's fpga.estimate.utilization)"
        )


def step_verify(state: BuildState) -> None:
    from apprentice_hw.fpga import hls
    from apprentice_hw.output_steps import compare_outputs

    data, checks = state.data, state.parts.checks
    count = min(CHECK_IMAGES, len(data.test_x))
    images = data.test_x[:count].numpy()
    design = state.device_artifacts
    outputs = hls.run(design.hls_model, design.split, images)
    reference = state.ort_outputs[:count]
    check = compare_outputs(reference, outputs, checks.output_step)
    result = CsimCheck(
        samples=count,
        max_diff_steps=check.max_diff_steps,
        identical_samples=round(check.fraction_exact * count),
        within_1_step=round(check.fraction_within_one_step * count),
        prediction_agreement=check.prediction_agreement,
        exact=bool(np.array_equal(outputs, reference)),
    )
    checks.hls_csim = result
    checks.compiled_module_checked = (
        f"hls4ml's C simulation of the FPGA part on {count} test images, head on the host"
    )
    # On the checked images only (the C simulation is slow): not comparable to the full-split
    # top-1 of the other rows, hence its own key.
    state.parts.accuracy.compiled_top1 = None
    state.parts.accuracy.partial[f"hls_csim_top1_first_{count}"] = float(
        np.mean(outputs.argmax(1) == data.test_y[:count].numpy())
    )
    state.parts.latency = Latency.not_measured(NOT_MEASURED)
    state.progress.message(
        f"    C simulation vs ONNX Runtime on {count} images: max {result.max_diff_steps:g} "
        f"output steps, {result.identical_samples}/{count} identical"
    )
    if state.recipe.quant == EXACT_QUANT and not result.exact:
        raise RuntimeError(
            f"the hls4ml C simulation differs from ONNX Runtime by up to "
            f"{result.max_diff_steps:g} output steps on a power-of-two model, which must be "
            "exact; the FPGA build is broken"
        )


def step_bundle(state: BuildState) -> None:
    state.progress.message(
        f"    no deploy bundle for FPGA targets: the HLS project is in {HLS_DIR}/ (synthesize it "
        "with Vitis HLS; firmware/ holds the C++ sources)"
    )
