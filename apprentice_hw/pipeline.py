"""The build pipeline: ordered steps that turn a recipe and a target into a build directory.

Steps run in a private staging directory next to the requested output (``.<name>.partial``);
only when every step has finished is it renamed into place, so an interrupted or failed build
never leaves a half-written output directory (and never destroys the previous complete one).
The staging directory records the steps it has finished (``build-progress.json``); an
interrupted build is kept there and ``--resume`` continues it: training from its last epoch
checkpoint, or not at all when it had finished; the later steps (seconds) run again. Each
step's wall time and every artifact's hash go into ``manifest.json``.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from apprentice_hw.artifacts import MODULE_FILE, QCDQ_FILE, QONNX_FILE, REPORT_BATCHES
from apprentice_hw.atomic import replace_directory, write_json
from apprentice_hw.backends import backend_for, validate_target
from apprentice_hw.build_state import BuildState, Step
from apprentice_hw.config import Recipe
from apprentice_hw.data import load_dataset
from apprentice_hw.errors import TrainingDivergedError, UserError
from apprentice_hw.hardware import Target, host_twin
from apprentice_hw.manifest import write_build_manifest
from apprentice_hw.options import BuildOptions
from apprentice_hw.outputs import check_replaceable, exclusive, resolve_output
from apprentice_hw.progress import Progress
from apprentice_hw.quant import weight_preset
from apprentice_hw.report_model import (
    Accuracy,
    Checks,
    DeviceCode,
    Latency,
    LatencyEstimate,
    LayerRow,
    MemorySection,
    ModuleConstants,
    ModuleFiles,
    PlannedActivations,
    Report,
    ReportParts,
    TargetSection,
    TrainedModel,
    WeightMemory,
)


def step_data(state: BuildState) -> None:
    state.data = load_dataset(
        state.recipe.dataset, state.recipe.data_path, state.recipe.seed, state.recipe.train_limit
    )
    d = state.data
    state.progress.message(
        f"    {d.name}: {len(d.train_x)} train / {len(d.test_x)} test images of shape "
        f"{tuple(d.input_shape)}, {d.num_classes} classes"
    )


def step_train(state: BuildState) -> None:
    from apprentice_hw.distill import evaluate
    from apprentice_hw.training import train_models

    data = state.data
    trained = train_models(state.recipe, data, state.workdir, state.progress, resume=state.resume)
    state.student = trained.student
    state.parts.accuracy = Accuracy(
        teacher_top1=(
            evaluate(trained.teacher, data.test_x, data.test_y) if trained.teacher_trained else None
        ),
        student_top1=evaluate(trained.student, data.test_x, data.test_y),
    )
    state.parts.training = list(trained.history)


def restore_train(state: BuildState, saved: ReportParts) -> None:
    """A finished training step of an interrupted build: its student and accuracy, no epochs."""
    from apprentice_hw.build_dir import STUDENT_FILE, load_weights
    from apprentice_hw.training import build_student

    student = build_student(state.recipe, state.data)
    fix = "rerun the build without --resume"
    state.student = load_weights(student, state.workdir / STUDENT_FILE, fix).eval()
    state.parts.accuracy = saved.accuracy
    state.parts.training = saved.training


# Steps whose results an interrupted build can reload instead of recomputing.
RESTORE: dict[str, Callable[[BuildState, ReportParts], None]] = {"train": restore_train}


def step_export(state: BuildState) -> None:
    from apprentice_hw.export import check_with_onnxruntime, export_qcdq, export_qonnx_model
    from apprentice_hw.export.onnx_export import output_quant_step

    data = state.data
    sample = data.test_x[:1]
    state.onnx_model = export_qcdq(state.student, sample, state.workdir / QCDQ_FILE)
    export_qonnx_model(state.student, sample, state.workdir / QONNX_FILE)
    check, ort_outputs, _ = check_with_onnxruntime(state.student, state.onnx_model, data.test_x)
    state.ort_outputs = ort_outputs
    state.parts.accuracy.onnxruntime_top1 = float(
        np.mean(ort_outputs.argmax(1) == data.test_y.numpy())
    )
    state.parts.checks = Checks(
        output_step=output_quant_step(state.onnx_model),
        comparisons={"onnxruntime_vs_brevitas": check},
    )
    state.progress.message(
        f"    ONNX Runtime vs Brevitas on {check.samples} test images: max "
        f"{check.max_diff_steps:.2f} output steps, top-1 agreement {check.prediction_agreement:.2%}"
    )
    if check.prediction_agreement < 0.99:
        raise RuntimeError(
            "the exported ONNX model disagrees with the trained student on "
            f"{1 - check.prediction_agreement:.1%} of test images; the export is broken"
        )


@dataclass
class CompiledModule:
    """What compiling one ONNX model for a CPU or GPU target produced (``compile_model``)."""

    prepared: Any  # compiler.PreparedModule at batch 1
    layers: list[LayerRow]
    constants: ModuleConstantsDraft
    plans: dict[int, PlannedActivations]
    files: ModuleFiles
    paper_activation_bytes: dict[int, float]
    latency_estimate: LatencyEstimate
    device_code: DeviceCode | None

    @property
    def quantized_bytes(self) -> int:
        """The lowered layers' weights in the module."""
        return self.constants.quantized_weight_bytes

    def memory(self, footprint) -> MemorySection:
        """The memory section, with the weights at trained precision (``footprint``: a
        ``report.footprint.WeightFootprint`` of the trained model or of the ONNX graph)."""
        draft = self.constants
        weights = WeightMemory.from_footprint(
            footprint,
            draft.quantized_weight_bytes,
            module=ModuleConstants(
                compiled_module_bytes=draft.compiled_module_bytes,
                compiled_module_tensors=draft.compiled_module_tensors,
                scale_bytes=draft.scale_bytes,
                other_bytes=draft.other_bytes,
                quantized_vs_trained=round(
                    draft.quantized_weight_bytes / max(footprint.quantized_bytes, 1), 4
                ),
            ),
        )
        return MemorySection(weights, self.plans, self.paper_activation_bytes, self.files)


@dataclass(frozen=True)
class ModuleConstantsDraft:
    """The module's constants before the trained footprint is known."""

    compiled_module_bytes: int
    compiled_module_tensors: int
    quantized_weight_bytes: int
    scale_bytes: int
    other_bytes: int


def compile_model(
    onnx_model, target: Target, kernel: str | None, workdir: Path, progress: Progress
) -> CompiledModule:
    """Lower, compile and export ``onnx_model`` to ``workdir/model.so``; describe the result.

    Shared by ``build`` (a trained student) and ``compile`` (a user's quantized model): the
    layer table, the memory plan at batch 1 and 8, the module's constants and files, and the
    latency estimate. The weight footprint at trained precision is the caller's to add
    (``CompiledModule.memory``).
    """
    from apprentice_hw.compiler.memory import (
        kernel_workspace_bytes,
        memory_plan,
        runtime_library_bytes,
    )
    from apprentice_hw.compiler.schedules import ScheduleCount
    from apprentice_hw.hardware import host_arch
    from apprentice_hw.report.estimate import estimate_latency
    from apprentice_hw.report.layers import activation_bytes, layer_costs

    backend = backend_for(target)
    prepared = backend.prepare(onnx_model, target, batch=1, kernel=kernel)
    unused = unused_kernel_warning(kernel, prepared.layers)
    if unused:
        progress.message(f"    {unused}")
    count = ScheduleCount()
    executable = backend.compile(prepared.mod, target, count=count)
    if count.tuned + count.shipped + count.default:  # CPU targets: where schedules came from
        progress.message(f"    {count.describe()}")
    backend.link(executable, target, workdir / MODULE_FILE)
    device_code = backend.device_report(workdir / MODULE_FILE)
    if device_code is not None:
        progress.message(f"    device code: {device_code.description}")
    plans = {
        b: memory_plan(
            prepared.mod if b == 1 else backend.prepare(onnx_model, target, b, kernel).mod,
            target,
            b,
        )
        for b in REPORT_BATCHES
    }
    lowered = [layer for layer in prepared.layers if layer.strategy != "float"]
    quantized_bytes = sum(layer.weight_bytes for layer in lowered)
    scale_bytes = sum(layer.scale_bytes for layer in lowered)
    compiled_bytes = plans[1].weight_bytes
    costs = {cost.name: cost for cost in layer_costs(onnx_model)}
    constants = ModuleConstantsDraft(
        compiled_module_bytes=compiled_bytes,
        compiled_module_tensors=plans[1].weight_tensors,
        quantized_weight_bytes=quantized_bytes,
        scale_bytes=scale_bytes,
        other_bytes=max(0, compiled_bytes - quantized_bytes - scale_bytes),
    )
    files = ModuleFiles(
        # Scratch memory of the largest kernel (padded activations, decoded weights), taken
        # from TVM's workspace pool outside the planned activations; at batch 1.
        kernel_workspace_bytes_batch_1=kernel_workspace_bytes(prepared.mod, target),
        module_file_bytes=(workdir / MODULE_FILE).stat().st_size,
        runtime_arch=host_arch(),
        runtime_library_bytes=runtime_library_bytes(),
    )
    return CompiledModule(
        prepared=prepared,
        layers=[LayerRow.lowered(layer, costs.get(layer.name)) for layer in prepared.layers],
        constants=constants,
        plans=plans,
        files=files,
        # The paper's Figure 1 measure, from the graph's shapes: conv and FC outputs at the bits
        # their quantizers store (the compiled module keeps codes of up to 8 bits in bytes).
        paper_activation_bytes={
            b: activation_bytes(list(costs.values()), b) for b in REPORT_BATCHES
        },
        latency_estimate=LatencyEstimate.from_dict(
            estimate_latency(list(costs.values()), target).to_dict()
        ),
        device_code=device_code,
    )


def unused_kernel_warning(kernel: str | None, layers) -> str | None:
    """A warning when a forced ``--kernel`` took none of the layers, or None."""
    if kernel is None or any(layer.strategy == kernel for layer in layers):
        return None
    chosen = ", ".join(sorted({layer.strategy for layer in layers})) or "none"
    return (
        f"warning: --kernel {kernel} supports none of the {len(layers)} quantized layers "
        f"(they use: {chosen}); see 'apprentice-hw kernels' for what each strategy takes"
    )


def compiled_summary_line(compiled: CompiledModule, trained_quantized_bytes: float) -> str:
    """How many layers became integer kernels, and what their weights take."""
    layers = compiled.prepared.layers
    lowered = [layer for layer in layers if layer.strategy != "float"]
    strategies = sorted({layer.strategy for layer in layers})
    return (
        f"    {len(lowered)}/{len(layers)} layers lowered to integer kernels "
        f"({', '.join(strategies)}); weights in the module {compiled.quantized_bytes} B "
        f"(parameters x bits / 8: {trained_quantized_bytes:g} B)"
    )


def step_compile(state: BuildState) -> None:
    from apprentice_hw.report import weight_footprint

    compiled = compile_model(
        state.onnx_model, state.target, state.kernel, state.workdir, state.progress
    )
    footprint = weight_footprint(state.student)
    parts = state.parts
    parts.layers = compiled.layers
    parts.memory = compiled.memory(footprint)
    parts.latency_estimate = compiled.latency_estimate
    parts.device_code = compiled.device_code
    state.progress.message(compiled_summary_line(compiled, footprint.quantized_bytes))


def checked_description(target: Target, runs_here: bool) -> str:
    """Which module the check ran: the built one, or its host twin."""
    if runs_here:
        return "the built module"
    return f"a host build with the same integer kernels ({target.name} modules cannot run here)"


def divergence_text(result) -> str:
    """``; first divergence at LAYER (N steps)`` of a failed ``verify_model``, or nothing."""
    where = result.first_divergence
    return f"; first divergence at {where.layer} ({where.max_diff_steps} steps)" if where else ""


def not_measured(target: Target) -> Latency:
    """The latency record of a module this machine cannot run, with the reason."""
    return Latency.not_measured(backend_for(target).not_measured_reason(target))


def measured_latency(module: Path, sample: np.ndarray, threads: int | None,
                     progress: Progress) -> Latency:  # fmt: skip
    """The module's batch-1 latency here, with ``threads`` TVM workers or, when None, with the
    faster of 1 and every core (small models lose to the thread pool's wake-ups)."""
    from apprentice_hw.compiler.runtime import fastest_latency, measure_latency

    if threads:
        latency = measure_latency(module, sample, threads=threads)
    else:
        latency = fastest_latency(module, sample)
    chosen = latency.threads
    how = "chosen" if threads else "the faster of 1 and all cores"
    progress.message(f"    latency median {latency.median_ms:.3f} ms (batch 1, {chosen} "
                     f"thread{'s' if chosen > 1 else ''}: {how})")  # fmt: skip
    return Latency.from_dict(latency.to_dict())


def step_verify(state: BuildState) -> None:
    from apprentice_hw.verify import brevitas_outputs, verify_model

    target, data, checks = state.target, state.data, state.parts.checks
    inputs = data.test_x.numpy()
    runs_here = target.runs_on_this_machine
    result = verify_model(
        state.onnx_model, inputs, target if runs_here else host_twin(target), state.kernel,
        brevitas=brevitas_outputs(state.student, data.test_x),
        module_path=state.workdir / MODULE_FILE if runs_here else None,
    )  # fmt: skip
    for name in ("compiled_vs_onnxruntime", "compiled_vs_brevitas", "compiled_vs_brevitas_float32"):
        checks.comparisons[name] = result.comparisons[name]
    checks.compiled_module_checked = checked_description(target, runs_here)
    if not result.passed:
        located = divergence_text(result)
        raise RuntimeError(
            f"the compiled module differs from the exact Brevitas student by more than "
            f"{result.tolerance_steps:g} output step on some test images, or its top-1 agrees "
            f"on fewer than 99%{located}"
        )
    state.progress.message(
        f"    compiled module vs Brevitas (exact): max "
        f"{checks.comparisons['compiled_vs_brevitas'].max_diff_steps:.2f} output steps, vs ONNX "
        f"Runtime: max {checks.comparisons['compiled_vs_onnxruntime'].max_diff_steps:.2f} "
        f"steps; checked: {checks.compiled_module_checked}"
    )
    state.compiled_outputs = result.compiled_outputs
    state.parts.accuracy.compiled_top1 = float(
        np.mean(result.compiled_outputs.argmax(1) == data.test_y.numpy())
    )
    if not runs_here:
        state.parts.latency = not_measured(target)
        return
    state.parts.latency = measured_latency(state.workdir / MODULE_FILE, data.test_x[:1].numpy(),
                                           state.options.threads, state.progress)  # fmt: skip


def target_info(target: Target) -> dict[str, Any]:
    """The target as the report and the bundle manifest describe it."""
    return TargetSection.from_target(target).to_dict()


def step_bundle(state: BuildState) -> None:
    from apprentice_hw.deploy.bundle import BUNDLE_DIR, VERIFY_COUNT, write_bundle

    recipe, target = state.recipe, state.target
    count = min(VERIFY_COUNT, len(state.data.test_x))
    produced_by = state.parts.checks.compiled_module_checked
    write_bundle(
        state.workdir / BUNDLE_DIR,
        state.workdir / MODULE_FILE,
        state.onnx_model,
        target_info=target_info(target),
        model_info={"recipe": recipe.name, "dataset": recipe.dataset,
                    "student": recipe.student.name, "weight_bits": recipe.weight_bits,
                    "act_bits": recipe.act_bits, "classes": state.data.num_classes},
        inputs=state.data.test_x[:count].numpy(),
        outputs=state.compiled_outputs[:count],
        produced_by=produced_by,
        tolerance_steps=backend_for(target).output_tolerance_steps,
        threads=state.parts.latency.threads,
    )  # fmt: skip
    state.progress.message(
        f"    {BUNDLE_DIR}/: module, run.py, manifest, {count} verification images, README"
    )


def trained_model_section(recipe: Recipe) -> TrainedModel:
    """The report's model section of a build: the recipe, its networks and precision."""
    first_last = (
        f"{recipe.first_last_bits}-bit" if recipe.first_last_bits is not None else "same as body"
    )
    return TrainedModel(
        recipe=recipe.name, dataset=recipe.dataset, teacher=recipe.teacher.name,
        student=recipe.student.name, scheme=recipe.distill.scheme, quant=recipe.quant,
        weight_bits=recipe.weight_bits, weight_preset=weight_preset(recipe.weight_bits).levels,
        act_bits=recipe.act_bits, first_last=first_last,
    )  # fmt: skip


def step_report(state: BuildState) -> None:
    from apprentice_hw.report import write_report

    target = state.target
    state.report = state.parts.report(
        trained_model_section(state.recipe), TargetSection.from_target(target),
        backend_for(target).execution,
    )  # fmt: skip
    write_report(state.report, state.workdir)


STEPS: tuple[Step, ...] = (
    Step("data", "load data", step_data),
    Step("train", "train teacher and distil the low-precision student", step_train),
    Step("export", "export QCDQ ONNX + QONNX and check with ONNX Runtime", step_export),
    Step("compile", "compile with TVM", step_compile),
    Step("verify", "run and time the compiled module", step_verify),
    Step("bundle", "write the deploy bundle", step_bundle),
    Step("report", "write report", step_report),
)


def steps_for(target: Target) -> list[Step]:
    """The pipeline for ``target``: the shared steps, some replaced by its backend's."""
    overrides = backend_for(target).steps()
    return [overrides.get(step.name, step) for step in STEPS]


def write_manifest(state: BuildState) -> dict[str, Any]:
    """Record versions, configuration, step timings and artifact hashes."""
    return write_build_manifest(
        state.workdir, state.target, state.timings, {"recipe": state.recipe.to_dict()}
    )


def validate_recipe(recipe: Recipe) -> None:
    """Resolve every registry name a recipe uses, so a typo fails before any training."""
    from apprentice_hw.data import DATASETS
    from apprentice_hw.distill import SCHEDULES, SCHEMES
    from apprentice_hw.distill.schemes import check_student_init, check_teacher_checkpoint
    from apprentice_hw.models import check_options
    from apprentice_hw.quant import QuantLayers

    QuantLayers.for_recipe(recipe)
    SCHEMES.get(recipe.distill.scheme)
    DATASETS.get(recipe.dataset)
    check_options(recipe.teacher)
    check_options(recipe.student)
    SCHEDULES.get(recipe.teacher_train.schedule)
    SCHEDULES.get(recipe.student_train.schedule)
    if recipe.distill.student_init:
        check_student_init(recipe)
    if recipe.teacher_checkpoint:
        check_teacher_checkpoint(recipe)


def validate(options: BuildOptions) -> Path:
    """Check everything that can be checked before minutes of training are spent.

    Returns the output directory with symbolic links resolved (what the build will replace).
    """
    validate_kernel(options.kernel)
    out = validate_output(options.out, options.force or options.resume)
    validate_recipe(options.recipe)
    validate_target(options.target, options.fpga)
    validate_writable(out)
    return out


def validate_kernel(kernel: str | None) -> None:
    """A forced kernel strategy names a registered one."""
    from apprentice_hw.lowering import KERNEL_STRATEGIES

    if kernel is not None:
        KERNEL_STRATEGIES.get(kernel)


def validate_output(out: Path, force: bool) -> Path:
    """``out`` with links resolved, refused when it exists without ``force`` or holds files
    apprentice-hw did not write."""
    out = resolve_output(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"output path {out} exists and is not a directory; choose another --out")
    if out.exists() and not force:
        raise UserError(f"output directory {out} already exists; pass --force to replace it")
    if out.exists():
        check_replaceable(out)
    return out


def validate_writable(out: Path) -> None:
    """A writable parent of ``out`` with room for the staging directory."""
    parent = out.parent
    existing = next((p for p in (parent, *parent.parents) if p.exists()), None)
    if existing is None or not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"cannot write to {parent}; choose a writable --out directory")
    free = shutil.disk_usage(existing).free
    if free < MIN_FREE_BYTES:
        raise UserError(
            f"only {free / 2**20:.0f} MiB free on the device holding {existing}; a build needs "
            f"about {MIN_FREE_BYTES / 2**20:.0f} MiB (staging plus checkpoints); free some space "
            "or choose another --out"
        )


PROGRESS_FILE = "build-progress.json"
# Checked before training: a digits build takes ~3 MiB, ResNet-18 at 224 about 200 MiB with
# its checkpoints and the staging copy; a disk that fills mid-build still fails cleanly.
MIN_FREE_BYTES = 256 * 2**20


def staging_dir(out: Path) -> Path:
    return out.absolute().parent / f".{out.name}.partial"


def _prepare_staging(workdir: Path, identity: dict[str, Any], resume: bool, out: Path):
    """A fresh staging directory, or the interrupted one to resume: (completed, saved report)."""
    progress_path = workdir / PROGRESS_FILE
    if resume and progress_path.exists():
        saved = json.loads(progress_path.read_text())
        differing = _differing_options(json.loads(json.dumps(identity)), saved)
        if differing:
            raise UserError(
                f"the interrupted build of {out} used other options ({differing}); rerun it "
                "with the same ones, or without --resume to start over"
            )
        for leftover in workdir.rglob("*.tmp"):  # atomic writes cut short by the interruption
            leftover.unlink()
        try:
            parts = ReportParts.from_dict(saved["report"])
        except (KeyError, TypeError, ValueError) as exc:
            raise UserError(
                f"the interrupted build of {out} was saved by another version or is damaged "
                f"({exc!r}); rerun it without --resume to start over"
            ) from exc
        return saved["completed"], parts
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir()
    return [], ReportParts()


def _differing_options(identity: dict[str, Any], saved: dict[str, Any]) -> str:
    """Which options differ from the interrupted build's, as ``name: then -> now`` (or "")."""
    changes = []
    for key, value in identity.items():
        then = saved.get(key)
        if isinstance(value, dict) and isinstance(then, dict):
            changes += [f"{key}.{name}: {then.get(name)!r} -> {value.get(name)!r}"
                        for name in sorted(set(value) | set(then))
                        if value.get(name) != then.get(name)]  # fmt: skip
        elif value != then:
            changes.append(f"{key}: {then!r} -> {value!r}")
    return "; ".join(changes[:3]) + ("; ..." if len(changes) > 3 else "")


def _record_progress(state: BuildState, identity: dict[str, Any], completed: list[str]) -> None:
    write_json(state.workdir / PROGRESS_FILE, {
        **identity, "completed": completed, "report": state.parts.to_dict(),
        "timings": state.timings,
    })  # fmt: skip


def run_build(options: BuildOptions, progress: Progress | None = None) -> Report:
    """Run every step into a staging directory, then move it to ``options.out``; returns the
    report (``report.json``).

    An interrupted or failed build keeps its staging directory; ``options.resume`` continues it.
    """
    progress = progress or Progress(quiet=True)
    out = validate(options)
    out.parent.mkdir(parents=True, exist_ok=True)
    workdir = staging_dir(out)
    identity = options.identity()
    with exclusive(out):
        if options.resume and out.exists() and not workdir.exists():
            raise UserError(f"{out} is complete: nothing to resume (pass --force to rebuild it)")
        completed, saved_report = _prepare_staging(workdir, identity, options.resume, out)
        state = BuildState(options=options, workdir=workdir, progress=progress)
        try:
            _run_steps(state, identity, completed, saved_report)
        except BaseException as exc:
            # Keep the staging directory only where --resume can use it: not before the first
            # step finished, nor after a diverged training (it would diverge the same way).
            if isinstance(exc, TrainingDivergedError) or not (workdir / PROGRESS_FILE).exists():
                shutil.rmtree(workdir, ignore_errors=True)
            raise
        (workdir / PROGRESS_FILE).unlink()
        write_manifest(state)
        replace_directory(workdir, out)
    return state.report


def _run_steps(state: BuildState, identity: dict[str, Any], completed: list[str],
               saved_report: ReportParts) -> None:  # fmt: skip
    """Run the target's steps in order, recording each finished one for ``--resume``."""
    steps = steps_for(state.target)
    done: list[str] = []
    for index, step in enumerate(steps, start=1):
        start = time.perf_counter()
        restore = RESTORE.get(step.name) if step.name in completed else None
        title = f"{step.title} (finished before the interruption)" if restore else step.title
        with state.progress.step(index, len(steps), title):
            if restore is not None:
                restore(state, saved_report)
            else:
                step.run(state)
        state.timings[step.name] = time.perf_counter() - start
        done.append(step.name)
        _record_progress(state, identity, done)
