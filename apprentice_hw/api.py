"""The public Python API: every capability of the command line as a typed function.

Each function does the work and returns a result object (paths, accuracy, memory, latency); it
prints nothing unless given a ``Progress`` (``Progress()`` prints steps and bars on stderr).
Bad input raises :class:`~apprentice_hw.errors.UserError` with a one-line message. The CLI
(``apprentice_hw/cli/``) parses options, calls these functions and formats what they return.

    import apprentice_hw as ahw

    result = ahw.build("x86-host", bits=2)            # the embedded digits recipe
    print(result.student_top1, result.latency_ms, result.out / "model.so")
    compiled = ahw.compile("my_model.qcdq.onnx", "arm-a72")
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from apprentice_hw.artifacts import MODULE_FILE, QCDQ_FILE
from apprentice_hw.backends import backend_for
from apprentice_hw.config import DistillSpec, Recipe, TrainSpec, load_recipe
from apprentice_hw.errors import UserError
from apprentice_hw.hardware import Target, get_target, host_target_name
from apprentice_hw.options import BuildOptions, FpgaOptions, default_output_dir
from apprentice_hw.progress import Progress
from apprentice_hw.report_model import Report

if TYPE_CHECKING:
    from torch import nn

    from apprentice_hw.compile_onnx import CompileResult
    from apprentice_hw.compiler.tuning import TuneProgress, TuneResult
    from apprentice_hw.deploy.remote_run import DeployResult
    from apprentice_hw.distill.trainer import Batches, EpochMetrics
    from apprentice_hw.verify import VerifyResult

DEFAULT_RECIPE = "digits"
MAX_TUNE_BATCH = 256
MAX_WAIT_S = 24 * 3600  # deploy: a day; a larger number would overflow socket timeouts


def _target(target: str | Target) -> Target:
    return target if isinstance(target, Target) else get_target(str(target))


# -- recipes and build options --------------------------------------------------------------
def load_recipe_with_overrides(recipe: str | Path | Recipe = DEFAULT_RECIPE,
                               **overrides: Any) -> Recipe:  # fmt: skip
    """A recipe (by name, path or value) with overrides applied and every registry name
    resolved, so a typo fails before any training.

    Overrides: ``bits`` (or ``weight_bits``), ``act_bits``, ``quant``, ``scheme``, ``epochs``,
    ``data_path``, ``seed``, ``teacher`` (a trained fp32 teacher's state dict) and
    ``student_init`` (schemes C, finetune); ``None`` keeps the recipe's value.
    """
    import inspect

    from apprentice_hw.pipeline import validate_recipe

    if "bits" in overrides:
        overrides["weight_bits"] = overrides.pop("bits")
    known = set(inspect.signature(Recipe.with_overrides).parameters) - {"self"}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise UserError(f"unknown recipe override {', '.join(unknown)}; known: "
                        f"bits, {', '.join(sorted(known))}")  # fmt: skip
    base = recipe if isinstance(recipe, Recipe) else load_recipe(str(recipe))
    resolved = base.with_overrides(**overrides)
    validate_recipe(resolved)
    return resolved


def build_options(
    target: str | Target,
    recipe: str | Path | Recipe = DEFAULT_RECIPE,
    *,
    out: str | Path | None = None,
    kernel: str | None = None,
    force: bool = False,
    resume: bool = False,
    fpga: FpgaOptions | None = None,
    threads: int | None = None,
    **overrides: Any,
) -> BuildOptions:
    """The options of one build, validated: the target, the recipe with ``overrides`` (see
    :func:`load_recipe_with_overrides`), where it goes (default
    ``build/<recipe>-<target>-w<bits>a<bits>``), for FPGA targets ``fpga``, and the TVM
    ``threads`` to time and run with (default: the faster of 1 and every core, measured).

    Where the recipe names no quantizer family override, the target's backend may choose one
    (FPGA targets: power-of-two scales, which fixed-point hardware reproduces exactly).
    """
    resolved_target = _target(target)
    default_quant = backend_for(resolved_target).default_quant
    if overrides.get("quant") is None and default_quant is not None:
        overrides["quant"] = default_quant
    resolved = load_recipe_with_overrides(recipe, **overrides)
    return BuildOptions(
        recipe=resolved, target=resolved_target,
        out=Path(out) if out is not None else default_output_dir(resolved, resolved_target),
        kernel=kernel, force=force, resume=resume, fpga=fpga or FpgaOptions(), threads=threads,
    )  # fmt: skip


def fpga_options(target: str | Target, reuse: int | None = None, fps: float | None = None,
                 synthesize: bool = False) -> FpgaOptions:  # fmt: skip
    """The FPGA options of a build for ``target``, refused first where the target is not an
    FPGA (whatever else is wrong with them)."""
    resolved = _target(target)
    given = reuse is not None or fps is not None or synthesize
    if given and not resolved.kind.takes_fpga_options:
        raise UserError(
            f"--reuse, --fps and --synthesize apply to FPGA targets; {resolved.name} is a "
            f"{resolved.device} target"
        )
    return FpgaOptions(reuse=reuse, fps=fps, synthesize=synthesize)


def default_quant_note(target: str | Target, quant: str | None) -> str | None:
    """What ``build_options`` chose for the quantizer family on ``target``, if anything."""
    backend = backend_for(_target(target))
    if quant is not None or backend.default_quant is None:
        return None
    return backend.default_quant_note


# -- build ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class BuildResult:
    """A finished build: its directory, options and report (``report.json``'s content)."""

    out: Path
    options: BuildOptions
    report: Report  # what report.json holds

    @property
    def module_path(self) -> Path | None:
        """The compiled module (``model.so``); None for FPGA builds (``hls/`` instead)."""
        path = self.out / MODULE_FILE
        return path if path.is_file() else None

    @property
    def student_top1(self) -> float:
        return self.report.accuracy.student_top1

    @property
    def teacher_top1(self) -> float | None:
        return self.report.accuracy.teacher_top1

    @property
    def latency_ms(self) -> float | None:
        """Median batch-1 latency measured here; None where this machine cannot run it."""
        return self.report.latency.median_ms

    @property
    def weight_bytes(self) -> int:
        """The quantized layers' weights as the module (or the FPGA design) stores them."""
        return self.report.memory.weights.quantized_weight_bytes

    @property
    def activation_bytes(self) -> dict[int, int]:
        """Planned activation memory by batch size (empty for FPGA builds: streamed)."""
        return {batch: plan.activation_bytes_planned
                for batch, plan in self.report.memory.activations.items()}  # fmt: skip

    def summary_lines(self) -> list[str]:
        """What ``apprentice-hw build`` prints after it finishes."""
        recipe = self.options.recipe
        teacher = "not trained" if self.teacher_top1 is None else f"{self.teacher_top1:.2%}"
        return [
            f"build written to {self.out}",
            f"  teacher top-1 {teacher}, student W{recipe.weight_bits}A{recipe.act_bits} "
            f"top-1 {self.student_top1:.2%}",
            *backend_for(self.options.target).summary_lines(self.report, self.out),
        ]


def build(
    target: str | Target,
    recipe: str | Path | Recipe = DEFAULT_RECIPE,
    *,
    progress: Progress | None = None,
    **options: Any,
) -> BuildResult:
    """Train, distil, export, compile, check, bundle and report: ``apprentice-hw build``.

    ``options`` are :func:`build_options`'s (``out``, ``kernel``, ``force``, ``resume``,
    ``fpga`` and the recipe overrides such as ``bits=2``).
    """
    return build_from(build_options(target, recipe, **options), progress)


def build_from(options: BuildOptions, progress: Progress | None = None) -> BuildResult:
    """Run one build from its :class:`BuildOptions`."""
    from apprentice_hw.pipeline import run_build

    report = run_build(options, progress)
    return BuildResult(options.out, options, report)


# -- train and distil -----------------------------------------------------------------------
@dataclass
class TrainResult:
    """Trained networks (eval mode), their test top-1 and the per-epoch history."""

    teacher: nn.Module
    student: nn.Module
    teacher_top1: float | None  # None where the scheme trains no teacher
    student_top1: float | None  # None where no test data was given
    history: list[EpochMetrics] = field(default_factory=list)
    out: Path | None = None  # train(): the training directory
    recipe: Recipe | None = None  # train(): the recipe with its overrides
    processes: int = 1


def train(
    recipe: str | Path | Recipe = DEFAULT_RECIPE,
    *,
    out: str | Path,
    resume: bool = False,
    force: bool = False,
    progress: Progress | None = None,
    **overrides: Any,
) -> TrainResult:
    """Train a recipe's teacher and distil its student into ``out`` (``apprentice-hw train``):
    checkpoints, ``teacher.pt``, ``student.pt``, ``train_log.jsonl``. Runs data-parallel when
    started by ``torchrun``."""
    import shutil

    from apprentice_hw.data import load_dataset
    from apprentice_hw.distill import distributed, evaluate
    from apprentice_hw.outputs import check_replaceable, resolve_output
    from apprentice_hw.training import train_models

    world = distributed.init_from_env()  # a no-op unless started by torchrun
    resolved = load_recipe_with_overrides(recipe, **overrides)
    out = resolve_output(Path(out))
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; choose a directory")
    if out.exists() and any(out.iterdir()) and not (resume or force):
        raise UserError(
            f"{out} already holds a run; pass --resume to continue or --force to restart"
        )
    if force or resume:
        check_replaceable(out)  # --resume writes into it too: only into a run of ours
    distributed.barrier()  # every rank has checked --out before the main rank changes it
    if force and out.exists() and world.is_main:
        shutil.rmtree(out)
    distributed.barrier()
    data = load_dataset(resolved.dataset, resolved.data_path, resolved.seed, resolved.train_limit)
    if progress is not None and not world.is_main:
        progress = Progress(quiet=True)
    trained = train_models(resolved, data, out, progress or Progress(quiet=True), resume=resume)
    # Every rank holds the same weights; only the main one spends the test-set evaluations.
    teacher_top1 = student_top1 = None
    if world.is_main:
        if trained.teacher_trained:
            teacher_top1 = evaluate(trained.teacher, data.test_x, data.test_y)
        student_top1 = evaluate(trained.student, data.test_x, data.test_y)
    return TrainResult(trained.teacher, trained.student, teacher_top1, student_top1,
                       trained.history, out, resolved, world.size)  # fmt: skip


def distill(
    teacher: nn.Module,
    student: nn.Module,
    train_data: Batches,
    test_data: Batches,
    *,
    scheme: str = "B",
    epochs: int = 5,
    teacher_epochs: int | None = None,
    lr: float = 0.05,
    batch_size: int = 64,
    alpha: float = 1.0,
    beta: float = 0.5,
    gamma: float = 0.5,
    tau: float = 1.0,
    teacher_trained: bool = False,
    student_init: dict | nn.Module | str | Path | None = None,
    seed: int = 0,
    progress: Progress | None = None,
) -> TrainResult:
    """Distil your own ``teacher`` into your own low-precision ``student`` (Apprentice loss).

    ``train_data`` and ``test_data`` are DataLoaders (or ``(images, labels)`` tensors) of
    (N, C, H, W) float images and integer labels. ``scheme``: ``A`` (teacher and student
    trained jointly), ``B`` (a trained, frozen teacher; the student from scratch), ``C`` (the
    student starts from ``student_init``, fp32 weights under its own parameter names: a
    state dict, a path to one, or a trained fp32 twin), ``none`` (no teacher: the
    baseline of A and B) or ``finetune`` (C without the teacher: C's baseline).
    ``teacher_trained`` skips the teacher's own training (``teacher_epochs``, default
    ``epochs``) in B and C. The networks are trained in place and returned.
    """
    import torch
    from torch import nn

    from apprentice_hw.distill.trainer import test_logits, topk_accuracy
    from apprentice_hw.training import distill_networks

    for what, network in (("teacher", teacher), ("student", student)):
        if not isinstance(network, nn.Module):
            raise UserError(f"{what} must be a torch.nn.Module, got {type(network).__name__}")
    init = student_init
    if isinstance(init, nn.Module):
        init = init.state_dict()
    elif isinstance(init, (str, Path)):
        from apprentice_hw.distill.schemes import read_student_init

        init = read_student_init(Path(init))
    spec = DistillSpec(scheme=scheme, alpha=alpha, beta=beta, gamma=gamma, tau=tau)
    student_spec = TrainSpec(epochs=epochs, batch_size=batch_size, lr=lr)
    teacher_spec = TrainSpec(epochs=teacher_epochs or epochs, batch_size=batch_size, lr=lr)
    torch.manual_seed(seed)
    trained = distill_networks(
        teacher, student, train_data, test_data, distill=spec, teacher_spec=teacher_spec,
        student_spec=student_spec, student_init=init, teacher_trained=teacher_trained, seed=seed,
        progress=progress,
    )  # fmt: skip
    logits, labels = test_logits({"teacher": teacher, "student": student}, test_data)
    teacher_top1 = topk_accuracy(logits["teacher"], labels, 1) if (
        trained.teacher_trained or teacher_trained
    ) else None  # fmt: skip
    return TrainResult(teacher, student, teacher_top1, topk_accuracy(logits["student"], labels, 1),
                       trained.history)  # fmt: skip


def export(model: nn.Module, sample, path: str | Path, *, qonnx: bool = False) -> Path:
    """Export a Brevitas student (``distill``'s, or your own) as QCDQ ONNX, or as QONNX with
    ``qonnx=True``, atomically at ``path``; ``sample`` is one input batch (a tensor). The
    model must end in an output quantizer (``QuantLayers.output_quant()``) so that
    ``compile`` can compare outputs in steps."""
    from apprentice_hw.export import export_qcdq, export_qonnx_model

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    (export_qonnx_model if qonnx else export_qcdq)(model.eval(), sample, path)
    return path


# -- compile, verify, tune ------------------------------------------------------------------
def compile(
    model: str | Path,
    target: str | Target,
    *,
    out: str | Path | None = None,
    kernel: str | None = None,
    inputs: str | Path | None = None,
    reference: str | Path | None = None,
    samples: int = 100,
    tolerance: float = 1.0,
    force: bool = False,
    threads: int | None = None,
    progress: Progress | None = None,
) -> CompileResult:
    """Compile a quantized ONNX model (QCDQ, QONNX or QDQ) into a build directory
    (``apprentice-hw compile``), checked against ONNX Runtime and ``reference`` outputs."""
    from apprentice_hw.compile_onnx import CompileOptions, compile_onnx

    options = CompileOptions(
        target=_target(target), out=Path(out) if out is not None else None, kernel=kernel,
        inputs=Path(inputs) if inputs is not None else None,
        reference=Path(reference) if reference is not None else None, samples=samples,
        tolerance=tolerance, force=force, threads=threads,
    )  # fmt: skip
    return compile_onnx(Path(model), options, progress)


def verify(
    path: str | Path,
    *,
    samples: int = 100,
    inputs: str | Path | None = None,
    target: str | None = None,
    kernel: str | None = None,
    tolerance: float = 1.0,
) -> VerifyResult:
    """Run the same inputs through Brevitas (builds), ONNX Runtime and the compiled module;
    differences in output steps. ``path``: a build directory or a quantized ONNX file."""
    from apprentice_hw.verify import run_verify

    return run_verify(Path(path), samples, Path(inputs) if inputs is not None else None, target,
                      kernel, tolerance)  # fmt: skip


def tune(
    path: str | Path,
    *,
    target: str | None = None,
    trials: int | None = None,
    time_budget_s: float | str | None = None,
    top: int | None = None,
    batch: int = 1,
    tracker: str | None = None,
    key: str | None = None,
    kernel: str | None = None,
    on_progress: Callable[[TuneProgress], None] | None = None,
    on_message: Callable[[str], None] | None = None,
) -> TuneResult:
    """Time every knob setting of the conv kernels of a build or ONNX model for a target, here
    or on a board behind a TVM RPC tracker; the fastest go to the tuning database that later
    builds apply. ``time_budget_s``: seconds, or a duration such as ``"90s"``, ``"10m"``."""
    from apprentice_hw.backends import prepare_module
    from apprentice_hw.build_dir import read_manifest
    from apprentice_hw.compiler.schedules import fused_module
    from apprentice_hw.compiler.tuning import check_database
    from apprentice_hw.compiler.tuning import tune as run_tune
    from apprentice_hw.pipeline import validate_kernel
    from apprentice_hw.remote import RemoteDevice
    from apprentice_hw.verify import load_onnx

    for name, value in (("--trials", trials), ("--top", top), ("--batch", batch)):
        if value is not None and value < 1:
            raise UserError(f"{name} must be at least 1, got {value}")
    if batch > MAX_TUNE_BATCH:
        raise UserError(f"--batch must be at most {MAX_TUNE_BATCH} (the kernels' buffers grow "
                        f"with it), got {batch}")  # fmt: skip
    if isinstance(time_budget_s, str):
        time_budget_s = parse_duration(time_budget_s)
    if time_budget_s is not None and not (math.isfinite(time_budget_s) and time_budget_s > 0):
        raise UserError(f"the time budget must be a positive number of seconds, got "
                        f"{time_budget_s}")  # fmt: skip
    if (tracker is None) != (key is None):
        raise UserError("--tracker and --key go together: the tracker address and the board key")
    remote = RemoteDevice.parse(tracker, key) if tracker is not None else None
    path = Path(path)
    if path.is_dir():
        target = target or read_manifest(path)["target"]["name"]
        path = path / QCDQ_FILE
    resolved = get_target(target or host_target_name())
    backend_for(resolved).check_target_file(resolved)
    if not backend_for(resolved).tunable:
        raise UserError(
            f"tuning {resolved.device} targets is not supported yet ({resolved.name} builds use "
            "the default GPU schedules); tune a CPU target"
        )
    if remote is None and not resolved.runs_on_this_machine:
        raise UserError(
            f"target {resolved.name} does not run on this machine, so its kernels cannot be "
            "measured here; time them on the board with --tracker HOST:PORT --key KEY"
        )
    validate_kernel(kernel)
    check_database(resolved, writing=True)
    if remote is not None:
        remote.check()
    prepared = prepare_module(load_onnx(path), resolved, batch=batch, kernel=kernel)
    fused = fused_module(prepared.mod, resolved.tvm_target())
    if on_message is not None:
        where = f"on '{key}' via {tracker}" if remote else "on this machine"
        on_message(f"tuning the conv kernels of {path.name} for {resolved.name} {where} ...")
    return run_tune(fused, resolved, trials=trials, top=top, time_budget_s=time_budget_s,
                    remote=remote, progress=on_progress)  # fmt: skip


DURATION_UNITS = {"s": 1, "m": 60, "h": 3600}


def parse_duration(text: str) -> float:
    """Seconds in ``text``: a number with an optional unit s, m or h (``90s``, ``10m``, ``1h``)."""
    number, unit = (text[:-1], text[-1]) if text and text[-1] in DURATION_UNITS else (text, "s")
    try:
        seconds = float(number) * DURATION_UNITS[unit]
    except ValueError:
        seconds = -1.0
    if seconds <= 0 or not math.isfinite(seconds):
        raise UserError(
            f"--time-budget must be a positive duration like 90s, 10m or 1h, got '{text}'"
        )
    return seconds


# -- report ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class BuildReport:
    """A build directory's report, rendered on demand as Markdown, JSON, HTML or the plot."""

    build_dir: Path
    report: Report

    def markdown(self) -> str:
        from apprentice_hw.report.writer import render_markdown

        return render_markdown(self.report)

    def to_dict(self) -> dict[str, Any]:
        """What ``report.json`` holds."""
        return self.report.to_dict()

    def html(self) -> str:
        from apprentice_hw.report.html import render_html

        return render_html(self.report, self.build_dir)

    def plot(self, path: str | Path | None = None) -> Path:
        """Write the Figure-1 plot (default: the build's ``footprint.png``)."""
        from apprentice_hw.report.fields import FIGURE_FILE, figure_title
        from apprentice_hw.report.figure import build_bars, plot_footprint

        target = Path(path) if path is not None else self.build_dir / FIGURE_FILE
        return plot_footprint(build_bars(self.report), figure_title(self.report), target)


def report(build_dir: str | Path) -> BuildReport:
    """A build's report (``report.json``), with the HLS synthesis results where a project was
    synthesized after the build."""
    from dataclasses import replace

    from apprentice_hw.build_dir import read_report

    build_dir = Path(build_dir)
    loaded = read_report(build_dir)  # one line when it is not a build or the report is damaged
    if loaded.fpga is not None:
        from apprentice_hw.fpga.synthesis import synthesis_of

        synthesized = synthesis_of(build_dir, loaded.fpga.hls_project)
        if synthesized is not None:
            loaded.fpga = replace(loaded.fpga, synthesis=synthesized)
    return BuildReport(build_dir, loaded)


def compare(build_dirs: list[str | Path]) -> list[tuple[str, Report]]:
    """(build name, report) of each build, for ``report.compare``'s table and plot."""
    return [(Path(d).name, report(d).report) for d in build_dirs]


# size_model exports the network at this input size: ResNet-18 at 2048x2048 already holds
# about 0.8 GiB of activations; 100000x100000 would ask for hundreds of GB.
MIN_INPUT, MAX_INPUT, MAX_CLASSES = 8, 2048, 100_000
FIRST_LAST_POLICIES = {"8": (8,), "same": (None,), "both": (8, None)}


@dataclass(frozen=True)
class SizedPrecision:
    """One precision of a zoo model: its weight and activation bytes (batch 1 and 8)."""

    label: str  # fp32 or WxAy
    first_last: str  # "8-bit" or "same": the first conv and classifier's weight bits
    weight_bytes: float
    activation_bytes: dict[int, float]  # by batch size

    def to_dict(self) -> dict[str, Any]:
        activations = {f"batch_{b}": v for b, v in self.activation_bytes.items()}
        return {"first_last": self.first_last, "label": self.label,
                "weight_bytes": self.weight_bytes, "activation_bytes": activations}  # fmt: skip


@dataclass(frozen=True)
class ModelSizing:
    """``report --model``: a zoo model's footprint at several precisions, from its shapes."""

    model: str
    input_size: int
    classes: int
    rows: list[SizedPrecision]

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "input": self.input_size,
                "rows": [row.to_dict() for row in self.rows]}  # fmt: skip

    def plot(self, path: str | Path | None = None) -> Path:
        """The Figure-1 plot of the rows of the first first/last-layer policy."""
        from apprentice_hw.report.figure import FootprintBar, plot_footprint

        policy = self.rows[0].first_last
        title = (f"{self.model} {self.input_size}x{self.input_size}, first/last layer "
                 f"{'8-bit' if policy == '8-bit' else 'same bits'}")  # fmt: skip
        bars = [FootprintBar(r.label, r.weight_bytes, r.activation_bytes)
                for r in self.rows if r.first_last == policy]  # fmt: skip
        target = (
            Path(path)
            if path is not None
            else Path(f"{self.model}-{self.input_size}-footprint.png")
        )
        return plot_footprint(bars, title, target)


def size_model(
    model: str,
    *,
    input_size: int = 224,
    classes: int = 1000,
    precisions: tuple[str, ...] = ("fp32", "W8A8", "W4A4", "W2A2"),
    first_last: str = "both",
) -> ModelSizing:
    """Weight and activation bytes of a zoo model (random weights) at each precision: the
    untrained model is exported and its graph's shapes counted. ``first_last``: the first conv
    and the classifier at ``"8"`` bits, at the body's bits (``"same"``) or ``"both"``."""
    from apprentice_hw.models import MODELS
    from apprentice_hw.report import sizing

    if model not in MODELS.names():
        raise UserError(f"unknown model '{model}'; choose one of: {', '.join(MODELS.names())}")
    if not precisions:
        raise UserError("give at least one precision: fp32 or WxAy (e.g. fp32,W4A4)")
    for label in precisions:
        try:
            bits = sizing.parse_precision(label)
        except ValueError:
            bits = (0, 0)
        if bits is not None and not all(1 < b <= 8 for b in bits):
            raise UserError(f"precision '{label}' is not fp32 or WxAy with 2 to 8 bits each")
    if not MIN_INPUT <= input_size <= MAX_INPUT or not 2 <= classes <= MAX_CLASSES:
        raise UserError(
            f"--input must be from {MIN_INPUT} to {MAX_INPUT} pixels and --classes from 2 to "
            f"{MAX_CLASSES} (sizing exports the model at that size, in memory)"
        )
    if first_last not in FIRST_LAST_POLICIES:
        raise UserError(f"first_last must be one of {', '.join(FIRST_LAST_POLICIES)}")
    rows = [
        SizedPrecision(bar.label, "8-bit" if policy == 8 else "same", bar.weight_bytes,
                       bar.activation_bytes)
        for policy in FIRST_LAST_POLICIES[first_last]
        for bar, _ in sizing.size_model(model, input_size, classes, precisions=tuple(precisions),
                                        first_last_bits=policy)
    ]  # fmt: skip
    return ModelSizing(model, input_size, classes, rows)


# -- deploy ---------------------------------------------------------------------------------
def emulated_pi(
    folder: str | Path | None = None,
    *,
    mirror: str | None = None,
    port: int | None = None,
    on_message: Callable[[str], None] | None = None,
):
    """An emulated Raspberry Pi 4 (Debian's arm64 Python under qemu-user with the aarch64 TVM
    runtime), set up in ``folder`` on first use (needs root once). Returns a
    ``deploy.emulated_pi.EmulatedPi``; ``with pi.serve(key, port) as board:`` runs a local
    tracker with the board registered (``board.tracker``) for ``deploy`` and ``tune``."""
    from apprentice_hw.deploy import emulated_pi as emulated

    if port is not None and not 0 < port < 65536:
        raise UserError(f"--port must be between 1 and 65535, got {port}")
    folder = Path(folder) if folder is not None else emulated.default_dir()
    return emulated.setup(folder, mirror or emulated.DEFAULT_MIRROR,
                          progress=on_message or (lambda _message: None))  # fmt: skip


def deploy(
    build_dir: str | Path,
    *,
    tracker: str | None = None,
    key: str | None = None,
    host: str | None = None,
    repeat: int = 30,
    number: int = 10,
    wait_s: float = 60.0,
    on_message: Callable[[str], None] | None = None,
) -> DeployResult:
    """Run a build's bundle on a board over TVM RPC (a tracker and key, or a server's
    ``host``): check its outputs against the host build's, time it, and add both to the
    build's report (section ``deploy``)."""
    from apprentice_hw.build_dir import read_manifest, read_report
    from apprentice_hw.deploy.bundle import read_bundle
    from apprentice_hw.deploy.remote_run import (
        DeployError,
        check_options,
        record_in_report,
        run_on_board,
    )
    from apprentice_hw.outputs import exclusive

    if repeat < 2 or number < 1 or not 0 < wait_s <= MAX_WAIT_S:
        raise UserError(
            f"--repeat must be at least 2, --number at least 1 and --wait from 0 to "
            f"{MAX_WAIT_S:g} seconds"
        )
    endpoint = check_options(tracker, key, host)
    build_dir = Path(build_dir)
    read_manifest(build_dir)  # a folder that is not a build gets no lock file beside it
    say = on_message or (lambda _message: None)
    with exclusive(build_dir, "deploy"):  # a rebuild must not replace the build under us
        bundle = read_bundle(build_dir)
        saved = read_report(build_dir)  # checked before the board: deploy adds a section
        board = board_name(tracker, key, host)
        say(f"connecting to {board} ...")
        session = endpoint.connect(free_board_s=wait_s) if host is None else endpoint.connect()
        try:
            result = run_on_board(bundle, session, board, repeat, number, progress=say)
        except DeployError as exc:
            raise UserError(str(exc)) from exc
        record_in_report(build_dir, saved, result)
    return result


def board_name(tracker: str | None, key: str | None, host: str | None) -> str:
    """How messages name the board: ``'KEY' via TRACKER`` or the server's ``HOST:PORT``."""
    return f"'{key}' via {tracker}" if host is None else host
