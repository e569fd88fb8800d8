"""``compile``: a quantized ONNX model from any tool to a deployable build directory.

The same directory as ``build`` writes, minus training: ``model.so``, ``bundle/``,
``report.json/md/html``, ``footprint.png`` and ``manifest.json``, plus the model in the
canonical quantized form (``model.qcdq.onnx``, what ``tune`` and ``verify`` read) and the
inputs it was checked on (``inputs.npy``). QCDQ (Brevitas), QONNX (Brevitas, FINN, qonnx) and
QDQ (ONNX Runtime's ``quantize_static``, ...) models are accepted.

The module is checked against ONNX Runtime running the model as ONNX defines it, on the user's
inputs (``--inputs``) or seeded uniform images, and against the user's reference outputs where
given (``--reference``): the same gate as ``verify`` (every sample within the tolerance in
output steps on at least 99% of inputs, top-1 agreement at least 99%). Like ``build`` it works
in a staging directory and moves it into place only when every step has finished.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from apprentice_hw.artifacts import INPUTS_FILE, MODULE_FILE, QCDQ_FILE
from apprentice_hw.backends import backend_for, validate_target
from apprentice_hw.errors import CheckFailedError, UserError, summarize
from apprentice_hw.hardware import Target
from apprentice_hw.manifest import file_sha256, write_build_manifest
from apprentice_hw.options import check_threads
from apprentice_hw.output_steps import compare_outputs, fraction_within
from apprentice_hw.progress import Progress
from apprentice_hw.report_model import (
    Accuracy,
    CheckedInputs,
    Checks,
    CompiledModel,
    LayerRow,
    Report,
    ReportParts,
    TargetSection,
)

SOURCE_FORMATS = {"qonnx": "QONNX", "qcdq": "QCDQ", "qdq": "QDQ"}


@dataclass(frozen=True)
class CompileOptions:
    """What ``compile_onnx`` needs besides the model: validated before any work."""

    target: Target
    out: Path | None = None  # default: build/<model stem>-<target>
    kernel: str | None = None  # force a kernel strategy where it applies
    inputs: Path | None = None  # a .npy of inputs (N, C, H, W); default: seeded uniform [0, 1)
    reference: Path | None = None  # the user's outputs for those inputs (.npy)
    samples: int = 100  # inputs checked (the first ones of --inputs)
    tolerance: float = 1.0  # output steps
    force: bool = False  # replace an existing build directory
    threads: int | None = None  # TVM workers to time with (None: the faster of 1 and all cores)


@dataclass
class CompileResult:
    """A finished ``compile``: where it went and what the report says."""

    out: Path
    report: Report

    @property
    def module_path(self) -> Path:
        return self.out / MODULE_FILE

    @property
    def float_layers(self) -> list[LayerRow]:
        """The conv / fully connected layers left in float, with the reason in each row."""
        return self.report.float_layers

    @property
    def max_diff_steps(self) -> float:
        """The largest difference from ONNX Runtime on the checked inputs, in output steps."""
        return self.report.checks.comparisons["compiled_vs_onnxruntime"].max_diff_steps

    @property
    def latency_ms(self) -> float | None:
        return self.report.latency.median_ms


def source_format(model) -> str:
    """QONNX (``Quant`` nodes), QCDQ (integer Clip between Quantize and Dequantize) or QDQ."""
    from apprentice_hw.lowering.onnx_canonical import is_qonnx

    if is_qonnx(model):
        return SOURCE_FORMATS["qonnx"]
    producers = {out: node for node in model.graph.node for out in node.output}
    for node in model.graph.node:
        source = producers.get(node.input[0]) if node.input else None
        if node.op_type == "Clip" and source is not None and source.op_type == "QuantizeLinear":
            return SOURCE_FORMATS["qcdq"]
    return SOURCE_FORMATS["qdq"]


def default_output_dir(model_path: Path, target: Target) -> Path:
    """``build/<model stem>-<target>`` under the current directory."""
    return Path("build") / f"{Path(model_path).stem}-{target.name}"


@dataclass
class _Prepared:
    """The model and data of one compile, checked before the output directory is touched."""

    path: Path
    canonical: Any  # onnx.ModelProto in the canonical quantized form
    fmt: str
    inputs: np.ndarray
    reference: np.ndarray | None
    output_step: float


def _prepare(model_path: Path, options: CompileOptions) -> _Prepared:
    from apprentice_hw.compiler.tvm_build import input_shape
    from apprentice_hw.export.onnx_export import output_quant_step, strip_initializer_inputs
    from apprentice_hw.lowering import canonicalize
    from apprentice_hw.verify import float_output_hint, load_inputs, load_onnx

    if options.samples < 1:
        raise UserError(f"--samples must be at least 1, got {options.samples}")
    check_threads(options.threads)
    if not np.isfinite(options.tolerance) or options.tolerance < 0:
        raise UserError(f"--tolerance must be a number of output steps >= 0, got "
                        f"{options.tolerance}")  # fmt: skip
    model = load_onnx(model_path)
    try:
        canonical = canonicalize(model)
        strip_initializer_inputs(canonical)
        shape = input_shape(canonical, 1)
        step = output_quant_step(canonical)
    except UserError:
        raise
    except Exception as exc:  # qonnx's clean-up, a computed output scale: not a model we take
        if not isinstance(exc, ValueError):
            raise UserError(f"{model_path}: cannot bring it into the quantized form apprentice-hw "
                            f"compiles ({summarize(exc, 160)})") from exc  # fmt: skip
        raise UserError(f"{model_path}: {exc}{float_output_hint(exc)}") from exc
    inputs = load_inputs(options.inputs, shape, options.samples, seed=0)
    reference = None
    if options.reference is not None:
        if options.inputs is None:
            raise UserError("--reference needs --inputs: the outputs the model gave for them")
        reference = _load_reference(options.reference, len(inputs), _output_size(canonical))
    return _Prepared(Path(model_path), canonical, source_format(model), inputs, reference, step)


def _output_size(model) -> int | None:
    """Values per input of the model's output, where its shape says (None: unknown)."""
    dims = model.graph.output[0].type.tensor_type.shape.dim[1:]
    sizes = [d.dim_value for d in dims]
    return int(np.prod(sizes)) if sizes and all(size > 0 for size in sizes) else None


def _load_reference(path: Path, count: int, size: int | None) -> np.ndarray:
    """The user's outputs for the first ``count`` inputs, checked before any compiling."""
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read reference outputs from {path}: {exc}; pass a .npy") from exc
    if array.ndim < 1 or len(array) < count or not np.issubdtype(array.dtype, np.number):
        raise UserError(
            f"reference outputs in {path} have shape {array.shape}; pass one output per input "
            f"(at least {count}) as numbers"
        )
    array = array[:count].astype(np.float64)
    values = int(np.prod(array.shape[1:]))
    if size is not None and values != size:
        raise UserError(f"reference outputs in {path} have {values} values per input; the "
                        f"model gives {size}")  # fmt: skip
    if not np.all(np.isfinite(array)):
        raise UserError(f"reference outputs in {path} contain NaN or infinite values")
    return array


def compile_onnx(model_path: Path, options: CompileOptions, progress: Progress | None = None):
    """Compile the quantized ONNX model at ``model_path`` into a build directory.

    Returns a ``CompileResult``; raises ``UserError`` for bad input (one line) and
    ``CheckFailedError`` when the compiled module fails the check (nothing is written then).
    """
    from apprentice_hw.atomic import replace_directory
    from apprentice_hw.outputs import exclusive
    from apprentice_hw.pipeline import (
        staging_dir,
        validate_kernel,
        validate_output,
        validate_writable,
    )

    progress = progress or Progress(quiet=True)
    target = options.target
    backend_for(target).check_compilable(target)
    validate_kernel(options.kernel)
    out = options.out if options.out is not None else default_output_dir(model_path, target)
    out = validate_output(out, options.force)
    validate_target(target)
    validate_writable(out)
    prepared = _prepare(model_path, options)
    out.parent.mkdir(parents=True, exist_ok=True)
    workdir = staging_dir(out)
    with exclusive(out, "compile"):
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir()
        try:
            report, timings = _run_steps(prepared, options, workdir, progress)
            _write_manifest(prepared, options, workdir, timings)
        except BaseException:
            shutil.rmtree(workdir, ignore_errors=True)
            raise
        replace_directory(workdir, out)
    return CompileResult(out, report)


STEPS = (
    ("compile", "lower and compile with TVM"),
    ("verify", "check the module against ONNX Runtime"),
    ("bundle", "write the deploy bundle"),
    ("report", "write report"),
)


@dataclass
class _CompileState:
    """What the steps of one compile hand each other."""

    prepared: _Prepared
    options: CompileOptions
    workdir: Path
    progress: Progress
    parts: ReportParts = field(default_factory=lambda: ReportParts(Accuracy(labelled=False)))
    compiled_outputs: np.ndarray | None = None
    report: Report | None = None


def _run_steps(prepared: _Prepared, options: CompileOptions, workdir: Path,
               progress: Progress) -> tuple[Report, dict[str, float]]:  # fmt: skip
    state = _CompileState(prepared, options, workdir, progress)
    actions = {"compile": _step_compile, "verify": _step_verify, "bundle": _step_bundle,
               "report": _step_report}  # fmt: skip
    timings: dict[str, float] = {}
    for index, (name, title) in enumerate(STEPS, start=1):
        start = time.perf_counter()
        with progress.step(index, len(STEPS), title):
            actions[name](state)
        timings[name] = time.perf_counter() - start
    return state.report, timings


def _step_compile(state: _CompileState) -> None:
    import onnx

    from apprentice_hw.pipeline import compile_model, compiled_summary_line
    from apprentice_hw.report.footprint import onnx_weight_footprint

    prepared, options, workdir, progress = (state.prepared, state.options, state.workdir,
                                            state.progress)  # fmt: skip
    onnx.save(prepared.canonical, str(workdir / QCDQ_FILE))
    np.save(workdir / INPUTS_FILE, prepared.inputs)
    compiled = compile_model(prepared.canonical, options.target, options.kernel, workdir,
                             progress)  # fmt: skip
    footprint = onnx_weight_footprint(prepared.canonical, compiled.prepared.layers)
    parts = state.parts
    parts.layers = compiled.layers
    parts.memory = compiled.memory(footprint)
    parts.latency_estimate = compiled.latency_estimate
    parts.device_code = compiled.device_code
    progress.message(compiled_summary_line(compiled, footprint.quantized_bytes))
    for layer in compiled.prepared.layers:
        if layer.strategy == "float":
            progress.message(
                f"    warning: {layer.name} ({layer.kind}) stays float: {layer.reason}"
            )


def _step_verify(state: _CompileState) -> None:
    from apprentice_hw.hardware import host_twin
    from apprentice_hw.pipeline import (
        checked_description,
        divergence_text,
        measured_latency,
        not_measured,
    )
    from apprentice_hw.verify import MIN_AGREEMENT, verify_model

    prepared, options = state.prepared, state.options
    target = options.target
    runs_here = target.runs_on_this_machine
    result = verify_model(
        prepared.canonical, prepared.inputs, target if runs_here else host_twin(target),
        options.kernel, tolerance=options.tolerance,
        module_path=state.workdir / MODULE_FILE if runs_here else None,
    )  # fmt: skip
    checks = Checks(
        output_step=prepared.output_step,
        comparisons={"compiled_vs_onnxruntime": result.comparisons["compiled_vs_onnxruntime"]},
        compiled_module_checked=checked_description(target, runs_here),
    )
    failed = [] if result.passed else ["ONNX Runtime"]
    if prepared.reference is not None:
        compiled = result.compiled_outputs.reshape(len(prepared.inputs), -1)
        expected = prepared.reference.reshape(len(prepared.inputs), -1)
        if expected.shape != compiled.shape:
            raise UserError(
                f"reference outputs have {expected.shape[1]} values per input; the model gives "
                f"{compiled.shape[1]}"
            )
        check = compare_outputs(expected, compiled, prepared.output_step)
        checks.comparisons["compiled_vs_reference"] = check
        within = fraction_within(expected, compiled, prepared.output_step, options.tolerance)
        if within < MIN_AGREEMENT or check.prediction_agreement < MIN_AGREEMENT:
            failed.append("your reference outputs (--reference)")
    checks.inputs = CheckedInputs(
        samples=len(prepared.inputs),
        inputs=str(options.inputs) if options.inputs else "seeded uniform [0, 1)",
        tolerance_steps=options.tolerance, passed=not failed,
    )  # fmt: skip
    state.parts.checks = checks
    state.compiled_outputs = result.compiled_outputs
    comparison = checks.comparisons["compiled_vs_onnxruntime"]
    state.progress.message(
        f"    compiled module vs ONNX Runtime on {len(prepared.inputs)} inputs: max "
        f"{comparison.max_diff_steps:.2f} output steps, top-1 agreement "
        f"{comparison.prediction_agreement:.2%}; checked: {checks.compiled_module_checked}"
    )
    if failed:
        raise CheckFailedError(
            f"the compiled module differs from {' and '.join(failed)} by more than "
            f"{options.tolerance:g} output step on over 1% of inputs, or its top-1 agrees on "
            f"fewer than 99%{divergence_text(result)}; nothing was written"
        )
    if not runs_here:
        state.parts.latency = not_measured(target)
        return
    state.parts.latency = measured_latency(state.workdir / MODULE_FILE, prepared.inputs[:1],
                                           options.threads, state.progress)  # fmt: skip


def _model_section(prepared: _Prepared, layers: list[LayerRow]) -> CompiledModel:
    """The report's and the bundle's model section for a compiled model."""
    lowered = [layer for layer in layers if not layer.is_float]
    dims = prepared.canonical.graph.output[0].type.tensor_type.shape.dim
    return CompiledModel(
        source=prepared.path.name,
        source_sha256=file_sha256(prepared.path),
        format=prepared.fmt,
        weight_bits=sorted({layer.weight_bits for layer in lowered}),
        act_bits=sorted({layer.act_bits for layer in lowered if layer.act_bits is not None}),
        layers=len(layers),
        float_layers=len(layers) - len(lowered),
        outputs=int(np.prod([d.dim_value for d in dims[1:]])) if len(dims) > 1 else 1,
    )


def _step_bundle(state: _CompileState) -> None:
    from apprentice_hw.deploy.bundle import BUNDLE_DIR, VERIFY_COUNT, write_bundle
    from apprentice_hw.pipeline import target_info

    prepared, target = state.prepared, state.options.target
    count = min(VERIFY_COUNT, len(prepared.inputs))
    write_bundle(
        state.workdir / BUNDLE_DIR, state.workdir / MODULE_FILE, prepared.canonical,
        target_info=target_info(target),
        model_info=_model_section(prepared, state.parts.layers).to_dict(),
        inputs=prepared.inputs[:count], outputs=state.compiled_outputs[:count],
        produced_by=state.parts.checks.compiled_module_checked,
        tolerance_steps=backend_for(target).output_tolerance_steps,
        threads=state.parts.latency.threads,
    )  # fmt: skip
    state.progress.message(
        f"    {BUNDLE_DIR}/: module, run.py, manifest, {count} verification inputs, README"
    )


def _step_report(state: _CompileState) -> None:
    from apprentice_hw.report import write_report

    target = state.options.target
    # No labels: agreement with ONNX Runtime (checks) is the measure, accuracy stays empty.
    state.report = state.parts.report(
        _model_section(state.prepared, state.parts.layers), TargetSection.from_target(target),
        backend_for(target).execution,
    )  # fmt: skip
    write_report(state.report, state.workdir)


def _write_manifest(prepared, options, workdir, timings) -> None:
    source = {
        "path": str(prepared.path.absolute()), "sha256": file_sha256(prepared.path),
        "format": prepared.fmt, "kernel": options.kernel,
        "inputs": str(options.inputs) if options.inputs else None,
        "reference": str(options.reference) if options.reference else None,
    }  # fmt: skip
    write_build_manifest(workdir, options.target, timings, {"source": source})
