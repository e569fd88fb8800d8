"""The ``apprentice-hw`` command line: parse options, call one function, print the result.

User mistakes (:class:`UserError`, bad options) end with one ``error: ...`` line on stderr and
exit status 2; ``--debug`` anywhere on the command line shows the traceback instead.
"""

from __future__ import annotations

import errno
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from apprentice_hw import __version__
from apprentice_hw.deploy import emulated_pi as pi_defaults  # light: no ONNX or TVM
from apprentice_hw.errors import UserError

if TYPE_CHECKING:
    from apprentice_hw.config import Recipe

DEBUG_FLAG = "--debug"
# What Ctrl-C leaves behind, per command (the rest write nothing until they have finished).
INTERRUPTED = {
    "build": "no output was half-written (an interrupted build continues with --resume)",
    "compile": "no output was half-written",
    "train": "the last finished epoch is saved (continue with 'train --resume')",
    "tune": "the settings measured so far are kept in the tuning database",
    "deploy": "nothing was written to the build",
}
FPGA_QUANT = "po2"  # the quantizer family FPGA builds use unless --quant says otherwise
INPUTS_OPTION = click.option(
    "--inputs", "inputs_path", type=click.Path(path_type=Path), default=None,
    help="A .npy array of inputs (N, C, H, W) for an ONNX model. Default: seeded uniform [0, 1).",
)  # fmt: skip
KERNEL_HELP = (
    "Force a kernel strategy for the quantized layers it supports (see 'apprentice-hw "
    "kernels'); other layers keep the target's choice."
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="apprentice-hw")
def cli() -> None:
    """Distil low-precision students (Apprentice, ICLR 2018) and deploy them with TVM.

    Add --debug anywhere to see full tracebacks.
    """


@cli.command()
@click.option("--verbose", "-v", is_flag=True, help="Show TVM target, toolchain and peak rates.")
def targets(verbose: bool) -> None:
    """List the hardware targets (one TOML file each in targets/)."""
    from apprentice_hw.hardware import CORE_UNITS, all_targets

    found = all_targets()
    width = max((len(t.name) for t in found), default=0)
    for target in found:
        unit = CORE_UNITS[target.device]
        click.echo(
            f"{target.name:<{width}}  {target.device:<4} {target.arch:<8} {target.cores:>3} "
            f"{unit:<5} {target.clock_ghz:4.2f} GHz  {target.description}"
        )
        if verbose:
            linker = target.cross_compiler or "host compiler"
            peaks = ", ".join(f"{k} {v:g}" for k, v in target.peak_macs_per_cycle_per_core.items())
            click.echo(f"    file:        {target.source}")
            click.echo(f"    tvm target:  {target.tvm}")
            click.echo(f"    linker:      {linker}")
            click.echo(
                f"    memory:      {target.memory_mib} MiB, {target.memory_bandwidth_gbs:g} GB/s"
            )
            click.echo(f"    peak MAC/cycle/core: {peaks}")
            missing = ", ".join(target.missing_isa)
            lacking = f" (this CPU lacks {missing})" if missing else ""
            runs_here = "yes" if target.runs_on_this_machine else f"no{lacking}"
            click.echo(f"    runs here:   {runs_here}")
            if target.device == "cuda":
                click.echo(f"    device code: {_device_compiler_here(target)}")


def _device_compiler_here(target) -> str:
    """Which compiler a build of a CUDA target would use on this machine, or why none can."""
    from apprentice_hw.compiler.cuda import check_device_compiler

    try:
        return f"{check_device_compiler(target.tvm, target.name).name} on this machine"
    except UserError as exc:
        return f"none on this machine: {exc}"


@cli.command()
def recipes() -> None:
    """List the ready recipes (one TOML file each in pipelines/)."""
    from apprentice_hw.config import load_recipe, recipe_files

    for name in recipe_files():
        recipe = load_recipe(name)
        click.echo(
            f"{name:<16} W{recipe.weight_bits}A{recipe.act_bits} scheme {recipe.distill.scheme}  "
            f"{recipe.description}"
        )


def recipe_options(command: Callable) -> Callable:
    """The options that pick a recipe and override parts of it (shared by train and build)."""
    options = [
        click.option("--recipe", "-r", "recipe_name", default="digits", show_default=True,
                     help="Recipe name (see 'apprentice-hw recipes') or path to a recipe .toml."),
        click.option("--bits", "-b", type=int, default=None,
                     help="Weight bits: 2 (ternary), 3, 4 or 8. Default: the recipe's."),
        click.option("--act-bits", type=int, default=None,
                     help="Activation bits: 2, 4 or 8. Default: the recipe's."),
        click.option("--quant", default=None,
                     help="Quantizer family: float, per-channel, po2, wrpn (default: recipe)."),
        click.option("--scheme", default=None,
                     help="Distillation scheme: A, B, C or none. Default: the recipe's."),
        click.option("--epochs", type=int, default=None,
                     help="Override the teacher's and the student's epochs."),
        click.option("--data", "data_path", type=click.Path(path_type=Path), default=None,
                     help="Dataset folder, for datasets read from files."),
        click.option("--seed", type=int, default=None, help="Override the recipe's seed."),
        click.option("--teacher", type=click.Path(path_type=Path), default=None,
                     help="A trained fp32 teacher (state dict: a build's teacher.pt, torchvision "
                          "weights for ResNet-18/34/50) instead of training one; schemes B, C."),
        click.option("--student-init", type=click.Path(path_type=Path), default=None,
                     help="Scheme C: fp32 weights of the student's architecture to start from."),
    ]  # fmt: skip
    for option in reversed(options):
        command = option(command)
    return command


def load_recipe_with_overrides(recipe_name: str, **overrides) -> Recipe:
    """Load a recipe, apply the CLI's overrides and resolve every registry name it uses."""
    from apprentice_hw.config import load_recipe
    from apprentice_hw.pipeline import validate_recipe

    overrides["weight_bits"] = overrides.pop("bits", None)
    recipe = load_recipe(recipe_name).with_overrides(**overrides)
    validate_recipe(recipe)
    return recipe


@cli.command()
@recipe_options
@click.option(
    "--out",
    "-o",
    type=click.Path(path_type=Path),
    required=True,
    help="Training directory: checkpoints, teacher.pt, student.pt, train_log.jsonl.",
)
@click.option("--resume", is_flag=True, help="Continue from the checkpoints in --out.")
@click.option("--force", is_flag=True, help="Start over even if --out holds a previous run.")
@click.option("--quiet", "-q", is_flag=True, help="No progress output.")
def train(recipe_name: str, out: Path, resume: bool, force: bool, quiet: bool, **overrides) -> None:
    """Train the teacher and distil the student (no export or compile).

    Example: apprentice-hw train --scheme C --bits 4 --out runs/c-w4
    """  # fmt: skip
    import shutil

    from apprentice_hw.data import load_dataset
    from apprentice_hw.distill import distributed, evaluate
    from apprentice_hw.outputs import check_replaceable, resolve_output
    from apprentice_hw.progress import Progress
    from apprentice_hw.training import train_models

    world = distributed.init_from_env()  # a no-op unless started by torchrun
    recipe = load_recipe_with_overrides(recipe_name, **overrides)
    out = resolve_output(out)
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
    data = load_dataset(recipe.dataset, recipe.data_path, recipe.seed, recipe.train_limit)
    trained = train_models(recipe, data, out, Progress(quiet or not world.is_main), resume=resume)
    if not world.is_main:
        return
    processes = f"{world.size} processes" if world.size > 1 else "1 process"
    click.echo(f"training written to {out} ({processes})")
    if trained.teacher_trained:
        click.echo(f"  teacher top-1 {evaluate(trained.teacher, data.test_x, data.test_y):.2%}")
    click.echo(
        f"  student W{recipe.weight_bits}A{recipe.act_bits} ({recipe.quant}, scheme "
        f"{recipe.distill.scheme}) top-1 {evaluate(trained.student, data.test_x, data.test_y):.2%}"
    )


@cli.command()
@click.option(
    "--target",
    "-t",
    "target_name",
    required=True,
    help="Target name (see 'apprentice-hw targets') or path to a target .toml.",
)
@recipe_options
@click.option(
    "--out",
    "-o",
    type=click.Path(path_type=Path),
    default=None,
    help="Build directory. Default: build/<recipe>-<target>-w<bits>a<act-bits>.",
)
@click.option("--force", is_flag=True, help="Replace the build directory if it exists.")
@click.option("--resume", is_flag=True,
              help="Continue an interrupted or failed build of --out (same options).")  # fmt: skip
@click.option(
    "--reuse",
    type=int,
    default=None,
    help="FPGA targets: hls4ml reuse factor (default: the fastest design that fits).",
)
@click.option("--fps", type=float, default=None,
              help="FPGA targets: images per second to reach with fewest resources.")  # fmt: skip
@click.option("--synthesize", is_flag=True,
              help="FPGA targets: run Vitis HLS C synthesis (vitis_hls on PATH).")  # fmt: skip
@click.option("--kernel", default=None, help=KERNEL_HELP)
@click.option("--quiet", "-q", is_flag=True, help="No progress output.")
def build(
    target_name: str,
    recipe_name: str,
    out: Path | None,
    force: bool,
    resume: bool,
    kernel: str | None,
    reuse: int | None,
    fps: float | None,
    synthesize: bool,
    quiet: bool,
    **overrides,
) -> None:
    """Train, distil, export, compile and report in one go.

    \b
    Examples:
      apprentice-hw build --target arm-a72 --bits 2
      apprentice-hw build --target jetson-orin --bits 4      # cubin for sm_87 + aarch64 host
      apprentice-hw build --target zcu104 --bits 4 --fps 10000   # hls4ml project + estimates
    """  # fmt: skip
    from apprentice_hw.hardware import get_target
    from apprentice_hw.lowering import KERNEL_STRATEGIES
    from apprentice_hw.pipeline import default_output_dir, run_build
    from apprentice_hw.progress import Progress

    target = get_target(target_name)
    if target.device == "fpga" and overrides.get("quant") is None:
        # Fixed-point hardware reproduces power-of-two scales exactly, and nothing else.
        overrides["quant"] = FPGA_QUANT
        if not quiet:
            note = (f"FPGA target: power-of-two quantizers (--quant {FPGA_QUANT}), so the design "
                    "is bit-exact; pass --quant to choose another family")  # fmt: skip
            click.echo(note, err=True)
    recipe = load_recipe_with_overrides(recipe_name, **overrides)
    out = out if out is not None else default_output_dir(recipe, target)
    if kernel is not None:
        KERNEL_STRATEGIES.get(kernel)
    if (reuse is not None or fps is not None or synthesize) and target.device != "fpga":
        raise UserError(f"--reuse, --fps and --synthesize apply to FPGA targets; {target.name} "
                        f"is a {target.device} target")  # fmt: skip
    if reuse is not None and fps is not None:
        raise UserError("give --reuse or --fps, not both: --fps picks the reuse factor")
    options = {"reuse": reuse, "fps": fps, "synthesize": synthesize}
    report = run_build(recipe, target, out, force, Progress(quiet), kernel=kernel,
                       device_options=options, resume=resume)  # fmt: skip
    acc = report["accuracy"]
    teacher = "not trained" if acc["teacher_top1"] is None else f"{acc['teacher_top1']:.2%}"
    click.echo(f"build written to {out}")
    click.echo(
        f"  teacher top-1 {teacher}, student W{recipe.weight_bits}"
        f"A{recipe.act_bits} top-1 {acc['student_top1']:.2%}"
    )
    summary = _fpga_summary if target.device == "fpga" else _compiled_summary
    summary(report, out)


def _compiled_summary(report: dict, out: Path) -> None:
    """The rest of a CPU/GPU build's summary: memory, agreement, latency, bundle."""
    from apprentice_hw.report.writer import format_ms

    weights = report["memory"]["weights"]
    planned = {k: v["activation_bytes_planned"] for k, v in report["memory"]["activations"].items()}
    click.echo(
        f"  quantized weights in the module {weights['quantized_weight_bytes'] / 1024:.1f} KiB "
        f"(parameters x bits / 8: {weights['trained_quantized_bytes'] / 1024:.1f} KiB); "
        f"activations planned {planned['batch_1'] / 1024:.1f} KiB (batch 1), "
        f"{planned['batch_8'] / 1024:.1f} KiB (batch 8)"
    )
    checks = report["checks"]
    others = [
        f"vs {label}: max {checks[key]['max_diff_steps']:.2f} steps"
        for key, label in (("compiled_vs_brevitas", "Brevitas (exact)"),
                           ("compiled_vs_reference", "your reference outputs"))
        if checks.get(key)
    ]  # fmt: skip
    click.echo(
        f"  compiled module vs ONNX Runtime: max "
        f"{checks['compiled_vs_onnxruntime']['max_diff_steps']:.2f} output steps"
        f"{''.join(', ' + other for other in others)}; checked: "
        f"{checks['compiled_module_checked']}"
    )
    latency = report["latency"]
    estimate = report.get("latency_estimate", {}).get("ms")
    estimated = f"; estimated {format_ms(estimate)} (roofline lower bound)" if estimate else ""
    if latency.get("median_ms") is not None:
        click.echo(f"  latency {latency['median_ms']:.3f} ms median (batch 1){estimated}")
    else:
        click.echo(f"  latency not measured: {latency['reason']}{estimated}")
    click.echo(
        f"  deploy bundle: {out / 'bundle'} (copy it to the board and run 'python3 run.py "
        f"--verify'; or 'apprentice-hw deploy {out} --tracker HOST:PORT --key KEY')"
    )


def _fpga_summary(report: dict, out: Path) -> None:
    """The rest of an FPGA build's summary: C simulation check, estimates, HLS project."""
    check = report["checks"]["hls_csim_vs_onnxruntime"]
    fpga = report["fpga"]
    estimate = fpga["estimate"]
    verdict = "identical" if check["exact"] else f"max {check['max_diff_steps']:g} output steps"
    click.echo(
        f"  hls4ml C simulation vs ONNX Runtime on {check['samples']} test images: {verdict}"
    )
    used = ", ".join(
        f"{key} {value:,} ({estimate['utilization'][key]:.1%})"
        for key, value in estimate["totals"].items()
    )
    click.echo(f"  estimated on {fpga['part']} at reuse factor {estimate['reuse_factor']}: {used}")
    click.echo(
        f"  estimated latency {estimate['latency_cycles']:,} cycles = "
        f"{estimate['latency_ms']:.4f} ms at {estimate['clock_mhz']:g} MHz, "
        f"{estimate['images_per_second']:,.0f} images/s"
    )
    click.echo(f"  HLS project: {out / fpga['hls_project']} ({fpga['head']})")


@cli.command(name="compile")
@click.argument("model_path", metavar="MODEL.onnx", type=click.Path(path_type=Path))
@click.option(
    "--target",
    "-t",
    "target_name",
    required=True,
    help="Target name (see 'apprentice-hw targets') or path to a target .toml.",
)
@click.option(
    "--out",
    "-o",
    type=click.Path(path_type=Path),
    default=None,
    help="Build directory. Default: build/<model stem>-<target>.",
)
@click.option("--force", is_flag=True, help="Replace the build directory if it exists.")
@click.option("--kernel", default=None, help=KERNEL_HELP)
@INPUTS_OPTION
@click.option(
    "--reference",
    "reference_path",
    type=click.Path(path_type=Path),
    default=None,
    help="A .npy of your own outputs for --inputs: the module must match them too.",
)
@click.option("--samples", "-n", default=100, show_default=True, help="Inputs to check.")
@click.option("--tolerance", default=1.0, show_default=True, help="Allowed output steps.")
@click.option("--quiet", "-q", is_flag=True, help="No progress output.")
def compile_command(
    model_path: Path,
    target_name: str,
    out: Path | None,
    force: bool,
    kernel: str | None,
    inputs_path: Path | None,
    reference_path: Path | None,
    samples: int,
    tolerance: float,
    quiet: bool,
) -> None:
    """Compile a quantized ONNX model from any tool into a build directory.

    MODEL.onnx is QCDQ or QONNX (Brevitas, FINN, qonnx) or QDQ (ONNX Runtime's
    quantize_static, ...). Writes the same directory as 'build' minus training: model.so,
    bundle/, report.json/md/html, footprint.png, manifest.json; 'deploy', 'tune', 'report'
    and 'verify' take it. The module is checked against ONNX Runtime (and --reference).

    \b
    Examples:
      apprentice-hw compile cnv_w2a2.onnx --target x86-host            # Brevitas QCDQ
      apprentice-hw compile cnv_w2a2.qonnx.onnx --target arm-a72       # QONNX (FINN)
      apprentice-hw compile resnet_int8.onnx --target x86-host --inputs images.npy
    """  # fmt: skip
    from apprentice_hw.compile_onnx import CompileOptions, compile_onnx
    from apprentice_hw.hardware import get_target
    from apprentice_hw.progress import Progress

    options = CompileOptions(
        target=get_target(target_name), out=out, kernel=kernel, inputs=inputs_path,
        reference=reference_path, samples=samples, tolerance=tolerance, force=force,
    )  # fmt: skip
    result = compile_onnx(model_path, options, Progress(quiet))
    report = result.report
    click.echo(f"build written to {result.out}")
    model = report["model"]
    click.echo(
        f"  {model['format']} model {model['source']}: {model['layers'] - model['float_layers']}"
        f" of {model['layers']} conv / fully connected layers as integer kernels"
    )
    for layer in result.float_layers:
        click.echo(f"  warning: {layer['name']} ({layer['kind']}) stays float: "
                   f"{layer['reason']}", err=True)  # fmt: skip
    _compiled_summary(report, result.out)


@cli.command()
def kernels() -> None:
    """List the kernel strategies for quantized layers (pick one with 'build --kernel')."""
    from apprentice_hw.lowering import KERNEL_STRATEGIES

    for name in KERNEL_STRATEGIES.names():
        click.echo(f"{name:<10} {KERNEL_STRATEGIES.get(name).description}")


@cli.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--samples", "-n", default=100, show_default=True, help="Inputs to compare.")
@INPUTS_OPTION
@click.option(
    "--target",
    "-t",
    "target_name",
    default=None,
    help="Target whose kernel choices to check (default: the build's, or x86-host).",
)
@click.option("--kernel", default=None, help=KERNEL_HELP)
@click.option("--tolerance", default=1.0, show_default=True, help="Allowed output steps.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def verify(
    path: Path,
    samples: int,
    inputs_path: Path | None,
    target_name: str | None,
    kernel: str | None,
    tolerance: float,
    as_json: bool,
) -> int:
    """Run the same inputs through Brevitas, ONNX Runtime and the compiled module.

    PATH is a build directory (test images, the trained student and its module) or a quantized
    ONNX model (QCDQ, QONNX or QDQ from another tool). Differences are reported in output
    quantization steps; on a mismatch the first diverging layer is named. Exit status 1 when
    the check fails.

    Example: apprentice-hw verify build/digits-x86-host-w2a8
    """  # fmt: skip
    import json

    from apprentice_hw.verify import run_verify

    result = run_verify(path, samples, inputs_path, target_name, kernel, tolerance)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        click.echo(result.summary())
    return 0 if result.passed else 1


DURATION_UNITS = {"s": 1, "m": 60, "h": 3600}
MAX_WAIT_S = 24 * 3600  # deploy --wait: a day; a larger number would overflow socket timeouts
MAX_TUNE_BATCH = 256


def parse_duration(text: str) -> float:
    """Seconds in ``text``: a number with an optional unit s, m or h (``90s``, ``10m``, ``1h``)."""
    number, unit = (text[:-1], text[-1]) if text and text[-1] in DURATION_UNITS else (text, "s")
    try:
        seconds = float(number) * DURATION_UNITS[unit]
    except ValueError:
        seconds = -1.0
    if seconds <= 0:
        raise UserError(
            f"--time-budget must be a positive duration like 90s, 10m or 1h, got '{text}'"
        )
    return seconds


@cli.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option(
    "--target",
    "-t",
    "target_name",
    default=None,
    help="Target to tune for (default: the build's, or x86-host).",
)
@click.option(
    "--trials",
    type=int,
    default=None,
    help="Knob settings measured per kernel, the default first [default: all].",
)
@click.option(
    "--time-budget",
    default=None,
    help="Stop starting new measurements after this long (90s, 10m, 1h).",
)
@click.option(
    "--top", type=int, default=None, help="Tune only the N heaviest conv kernels [default: all]."
)
@click.option(
    "--batch",
    type=int,
    default=1,
    show_default=True,
    help="Batch size the records are for (builds compile batch 1).",
)
@click.option(
    "--tracker",
    default=None,
    help="HOST:PORT of a TVM RPC tracker: time the kernels on a board behind it.",
)
@click.option("--key", default=None, help="Device key of the board at --tracker.")
@click.option("--kernel", default=None, help=KERNEL_HELP)
def tune(
    path: Path,
    target_name: str | None,
    trials: int | None,
    time_budget: str | None,
    top: int | None,
    batch: int,
    tracker: str | None,
    key: str | None,
    kernel: str | None,
) -> None:
    """Tune the conv kernels of a model for a target, here or on a board over RPC.

    PATH is a build directory or a quantized ONNX model. Every setting of each conv kernel's
    schedule knobs (register tile, output blocks per tile, threaded prologue) is compiled and
    timed, the default first, so a record only replaces the default schedule when it measured
    faster. Records go to $APPRENTICE_HW_CACHE/tuning/<target>/<cpu>/ (default
    ~/.cache/apprentice-hw), which every later build for the target applies with no new trials.
    Targets that do not run here (boards) are timed through a TVM RPC tracker.

    \b
    Examples:
      apprentice-hw tune build/digits-x86-host-w2a8
      apprentice-hw tune student.onnx --time-budget 10m --batch 8
      apprentice-hw tune build/digits-arm-a72-w2a8 --tracker 192.168.1.5:9190 --key pi4
    """  # fmt: skip
    from apprentice_hw.build_dir import read_manifest
    from apprentice_hw.compiler import prepare_module
    from apprentice_hw.compiler.schedules import fused_module
    from apprentice_hw.compiler.tuning import check_database
    from apprentice_hw.compiler.tuning import tune as run_tune
    from apprentice_hw.hardware import get_target
    from apprentice_hw.lowering import KERNEL_STRATEGIES
    from apprentice_hw.pipeline import QCDQ_FILE
    from apprentice_hw.remote import RemoteDevice
    from apprentice_hw.verify import load_onnx

    for name, value in (("--trials", trials), ("--top", top), ("--batch", batch)):
        if value is not None and value < 1:
            raise UserError(f"{name} must be at least 1, got {value}")
    if batch > MAX_TUNE_BATCH:
        raise UserError(f"--batch must be at most {MAX_TUNE_BATCH} (the kernels' buffers grow "
                        f"with it), got {batch}")  # fmt: skip
    budget_s = parse_duration(time_budget) if time_budget is not None else None
    if (tracker is None) != (key is None):
        raise UserError("--tracker and --key go together: the tracker address and the board key")
    remote = RemoteDevice.parse(tracker, key) if tracker is not None else None
    if path.is_dir():
        target_name = target_name or read_manifest(path)["target"]["name"]
        path = path / QCDQ_FILE
    target = get_target(target_name or "x86-host")
    if target.device != "cpu":
        raise UserError(
            f"tuning {target.device} targets is not supported yet ({target.name} builds use "
            "the default GPU schedules); tune a CPU target"
        )
    if remote is None and not target.runs_on_this_machine:
        raise UserError(
            f"target {target.name} does not run on this machine, so its kernels cannot be "
            "measured here; time them on the board with --tracker HOST:PORT --key KEY"
        )
    if kernel is not None:
        KERNEL_STRATEGIES.get(kernel)
    check_database(target, writing=True)
    if remote is not None:
        remote.check()
    prepared = prepare_module(load_onnx(path), target, batch=batch, kernel=kernel)
    fused = fused_module(prepared.mod, target.tvm_target())
    where = f"on '{key}' via {tracker}" if remote else "on this machine"
    click.echo(f"tuning the conv kernels of {path.name} for {target.name} {where} ...", err=True)
    bar = _TuneBar()
    try:
        result = run_tune(fused, target, trials=trials, top=top, time_budget_s=budget_s,
                          remote=remote, progress=bar.update)  # fmt: skip
    finally:
        bar.close()
    for task in result.tasks:
        if task.best_us is None:
            why = "not reached (time budget)" if task.measured == 0 else "no setting ran"
            click.echo(f"  {task.name[:64]:<64} {why}")
            continue
        default = f"{task.default_us:8.1f}" if task.default_us is not None else "       -"
        speedup = f"{task.speedup:.2f}x" if task.speedup is not None else "-"
        click.echo(f"  {task.name[:64]:<64} default {default} us  best {task.best_us:8.1f} us"
                   f"  {speedup}")  # fmt: skip
    stopped = " (time budget reached)" if result.stopped_by_budget else ""
    click.echo(
        f"measured {result.measured} settings of {len(result.tasks)} kernels in "
        f"{result.seconds:.0f} s{stopped}; records in {result.database}"
    )


@cli.command()
@click.argument("build_dir", type=click.Path(path_type=Path))
@click.option(
    "--tracker", default=None, help="TVM RPC tracker HOST:PORT the board is registered at."
)
@click.option("--key", default=None, help="Device key of the board at --tracker.")
@click.option("--host", default=None, help="HOST:PORT of an RPC server started without a tracker.")
@click.option("--repeat", type=int, default=30, show_default=True, help="Timed runs.")
@click.option("--number", type=int, default=10, show_default=True, help="Calls per timed run.")
@click.option("--wait", type=float, default=60.0, show_default=True,
              help="Seconds to wait for a free board at the tracker.")  # fmt: skip
def deploy(
    build_dir: Path, tracker: str | None, key: str | None, host: str | None, repeat: int,
    number: int, wait: float,
) -> None:  # fmt: skip
    """Run a build on a board over TVM RPC: check its outputs, time it, add both to the report.

    The build's bundle/ module is uploaded, loaded and run on the bundled verification images;
    the outputs must equal the host build's exactly. Then TVM's time evaluator times it on the
    board (median and spread) and the results go into report.json/md/html. The board runs
    'python -m tvm.exec.rpc_server' (the TVM runtime only); 'apprentice-hw emulated-pi' starts
    an emulated Raspberry Pi to try it without one.

    \b
    Examples:
      apprentice-hw deploy build/digits-arm-a72-w2a8 --tracker 192.168.1.2:9190 --key pi4
      apprentice-hw deploy build/digits-arm-a72-w2a8 --host raspberrypi.local:9090
    """  # fmt: skip
    from apprentice_hw.build_dir import read_manifest, read_report
    from apprentice_hw.deploy.bundle import read_bundle
    from apprentice_hw.deploy.remote_run import (
        DeployError,
        check_options,
        record_in_report,
        run_on_board,
    )
    from apprentice_hw.outputs import exclusive

    if repeat < 2 or number < 1 or not 0 < wait <= MAX_WAIT_S:
        raise UserError(
            f"--repeat must be at least 2, --number at least 1 and --wait from 0 to {MAX_WAIT_S:g} "
            "seconds"
        )
    endpoint = check_options(tracker, key, host)
    read_manifest(build_dir)  # a folder that is not a build gets no lock file beside it
    with exclusive(build_dir, "deploy"):  # a rebuild must not replace the build under us
        bundle = read_bundle(build_dir)
        report = read_report(build_dir)  # checked before the board: deploy adds a section
        board = f"'{key}' via {tracker}" if host is None else host
        click.echo(f"connecting to {board} ...", err=True)
        session = endpoint.connect(free_board_s=wait) if host is None else endpoint.connect()

        def say(message: str) -> None:
            click.echo(f"  {message}", err=True)

        try:
            result = run_on_board(bundle, session, board, repeat, number, progress=say)
        except DeployError as exc:
            raise UserError(str(exc)) from exc
        record_in_report(build_dir, report, result)
    if result.identical:
        verdict = "identical to the host build's"
    elif result.passed:
        verdict = f"within {result.max_diff_steps:g} output steps of the host build's (allowed)"
    else:
        verdict = f"DIFFERENT from the host build's (up to {result.max_diff_steps:g} output steps)"
    click.echo(f"deployed {build_dir} to {board}")
    click.echo(f"  outputs on {result.samples} verification images {verdict}")
    click.echo(
        f"  latency on the board {result.latency_median_ms:.3f} ms median (min "
        f"{result.latency_min_ms:.3f}, max {result.latency_max_ms:.3f}, stdev "
        f"{result.latency_stdev_ms:.3f}; {result.repeats} runs of {result.number} calls)"
    )
    click.echo(f"  written to {build_dir / 'report.json'} (section 'deploy')")
    if not result.passed:
        click.echo("error: the board's outputs differ from the host build's; see above", err=True)
        return 1
    return 0


@cli.command("emulated-pi")
@click.option(
    "--port",
    type=int,
    default=pi_defaults.DEFAULT_PORT,
    show_default=True,
    help="Tracker port (127.0.0.1).",
)
@click.option("--key", default=pi_defaults.DEFAULT_KEY, show_default=True,
              help="Device key to register.")  # fmt: skip
@click.option("--setup-only", is_flag=True, help="Set it up (once, needs root) and exit.")
@click.option(
    "--dir",
    "folder",
    type=click.Path(path_type=Path),
    default=None,
    help="Where it lives (default $APPRENTICE_HW_PI_DIR or the apprentice-hw cache).",
)
@click.option("--mirror", default=pi_defaults.DEFAULT_MIRROR, show_default=True,
              help="Debian mirror for the one-time setup.")  # fmt: skip
def emulated_pi(port: int, key: str, setup_only: bool, folder: Path | None, mirror: str) -> None:
    """Start an emulated Raspberry Pi 4 (Cortex-A72) registered with a local TVM tracker.

    The first run sets it up (about a minute, needs root, qemu-user-static and debootstrap):
    Debian's arm64 Python under qemu-user with the aarch64 TVM runtime. Then a tracker on
    127.0.0.1:PORT and the emulated board's RPC server run until Ctrl-C, ready for
    'apprentice-hw deploy' and 'apprentice-hw tune'. Emulated timings say nothing about a real
    Pi's speed; outputs do match a real Pi's.

    \b
    Examples:
      sudo apprentice-hw emulated-pi --setup-only
      apprentice-hw emulated-pi &
      apprentice-hw deploy build/digits-arm-a72-w2a8 --tracker 127.0.0.1:9190 --key emulated-pi
    """  # fmt: skip
    from apprentice_hw.deploy import emulated_pi as emulated

    if not 0 < port < 65536:
        raise UserError(f"--port must be between 1 and 65535, got {port}")
    folder = folder if folder is not None else emulated.default_dir()
    pi = emulated.setup(folder, mirror, progress=lambda m: click.echo(m, err=True))
    click.echo(f"emulated Pi ready in {folder}; its Python: {pi.python}")
    if setup_only:
        return
    click.echo(f"starting the tracker on 127.0.0.1:{port} and the emulated board ...", err=True)
    # `kill` (SIGTERM) stops it as Ctrl-C does: the tracker and the board go down with it.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        with pi.serve(key, port) as device:
            click.echo(f"board '{key}' registered at {device.tracker}; stop with Ctrl-C")
            click.echo(f"  apprentice-hw deploy BUILD_DIR --tracker {device.tracker} --key {key}")
            click.echo(f"  {pi.python} BUILD_DIR/bundle/run.py --verify")
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        click.echo("stopped the emulated Pi and its tracker", err=True)


def _interrupt(_signum, _frame) -> None:
    raise KeyboardInterrupt


class _TuneBar:
    """A progress bar over all candidates, showing the current kernel's best time so far."""

    def __init__(self) -> None:
        self.bar = None

    def update(self, progress) -> None:
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(total=progress.candidates, desc="tuning", unit="setting",
                            file=sys.stderr, dynamic_ncols=True, disable=None)  # fmt: skip
        best = f"{progress.best_us:.1f} us" if progress.best_us is not None else "-"
        default = f"{progress.default_us:.1f} us" if progress.default_us is not None else "-"
        self.bar.set_postfix_str(
            f"kernel {progress.task_index}/{progress.tasks} best {best} (default {default})"
        )
        self.bar.update(progress.measured - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


REPORT_FORMATS = ("md", "json", "png", "html")
# report --model exports the network at this input size: ResNet-18 at 2048x2048 already holds
# about 0.8 GiB of activations; 100000x100000 would ask for hundreds of GB.
MIN_INPUT, MAX_INPUT, MAX_CLASSES = 8, 2048, 100_000


@cli.command()
@click.argument("path", required=False, type=click.Path(path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(REPORT_FORMATS),
    default="md",
    show_default=True,
    help="md and json print; png writes the Figure-1 plot; html the page with the plot (builds).",
)
@click.option(
    "--out",
    "-o",
    type=click.Path(path_type=Path),
    default=None,
    help="Where --format png or html writes (default: BUILD_DIR/footprint.png or "
    "report.html, or ./<model>-<input>-footprint.png with --model).",
)
@click.option(
    "--compare",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Another build to show beside PATH (repeat for more).",
)
@click.option(
    "--model",
    "model_name",
    default=None,
    help="Size a zoo model without training (random weights) instead of a build.",
)
@click.option(
    "--input",
    "input_size",
    type=int,
    default=224,
    show_default=True,
    help="Input height and width for --model.",
)
@click.option("--classes", type=int, default=1000, show_default=True, help="For --model.")
@click.option(
    "--precisions",
    default="fp32,W8A8,W4A4,W2A2",
    show_default=True,
    help="For --model: comma-separated fp32 or WxAy.",
)
@click.option(
    "--bits",
    type=int,
    default=None,
    help="For --model: shorthand for --precisions fp32,W<bits>A<act-bits>.",
)
@click.option("--act-bits", type=int, default=None, help="With --bits (default: the same).")
@click.option(
    "--first-last",
    type=click.Choice(["8", "same", "both"]),
    default="both",
    show_default=True,
    help="For --model: first conv and classifier weights at 8 bits, at the body's "
    "bits, or both (tables only; the plot uses 8).",
)
def report(
    path: Path | None,
    fmt: str,
    out: Path | None,
    compare: tuple[Path, ...],
    model_name: str | None,
    input_size: int,
    classes: int,
    precisions: str,
    bits: int | None,
    act_bits: int | None,
    first_last: str,
) -> None:
    """Memory footprint (weights, activations at batch 1 and 8) of a build or a zoo model.

    \b
    Examples:
      apprentice-hw report build/digits-x86-host-w2a8
      apprentice-hw report build/digits-x86-host-w2a8 --format png
      apprentice-hw report build/w8 --compare build/w4 --compare build/w2
      apprentice-hw report --model resnet18 --bits 2 --input 224
    """  # fmt: skip
    import json

    from apprentice_hw.report.figure import plot_footprint

    if (path is None) == (model_name is None):
        raise UserError("give a build directory or --model NAME (one of the two)")
    if path is None and fmt == "html":
        raise UserError("--format html is for a build directory; use md, json or png with --model")
    if compare:
        if path is None or fmt == "html":
            raise UserError("--compare needs a build directory first and --format md, json or png")
        _report_comparison([path, *compare], fmt, out)
        return
    if path is not None:
        from apprentice_hw.build_dir import read_report
        from apprentice_hw.report.figure import build_bars
        from apprentice_hw.report.writer import (
            FIGURE_FILE,
            HTML_FILE,
            figure_title,
            render_markdown,
        )

        data = read_report(path)  # one line when PATH is not a build or its report is damaged
        if data.get("fpga"):  # an HLS project synthesized after the build (e.g. elsewhere)
            from apprentice_hw.fpga.synthesis import synthesis_of

            synthesized = synthesis_of(path, data["fpga"]["hls_project"])
            if synthesized is not None:
                data["fpga"]["synthesis"] = synthesized
        if fmt == "md":
            click.echo(render_markdown(data))
        elif fmt == "json":
            click.echo(json.dumps(data, indent=2))
        elif fmt == "png":
            written = plot_footprint(
                build_bars(data), figure_title(data), out or path / FIGURE_FILE
            )
            click.echo(f"wrote {written}")
        else:
            from apprentice_hw.atomic import write_text
            from apprentice_hw.report.html import render_html

            target = out or path / HTML_FILE
            figure = path / FIGURE_FILE
            write_text(target, render_html(data, figure if figure.is_file() else None))
            click.echo(f"wrote {target}")
        return
    if bits is not None:
        precisions = f"fp32,W{bits}A{act_bits if act_bits is not None else bits}"
    elif act_bits is not None:
        raise UserError("--act-bits goes with --bits")
    _report_model(model_name, fmt, out, input_size, classes, precisions, first_last)


def _report_comparison(directories: list[Path], fmt: str, out: Path | None) -> None:
    """``report --compare``: builds side by side (table, JSON, or one plot)."""
    import json

    from apprentice_hw.report.compare import (
        comparison,
        comparison_bars,
        load_reports,
        render_comparison,
    )
    from apprentice_hw.report.figure import plot_footprint

    reports = load_reports(directories)
    if fmt == "png":
        target = out or Path("comparison-footprint.png")
        written = plot_footprint(comparison_bars(reports), "weights and activations", target)
        click.echo(f"wrote {written}")
    elif fmt == "json":
        click.echo(json.dumps(comparison(reports), indent=2))
    else:
        click.echo(render_comparison(comparison(reports)))


def _report_model(name: str, fmt: str, out: Path | None, input_size: int, classes: int,
                  precisions: str, first_last: str) -> None:  # fmt: skip
    """``report --model``: export the untrained model at each precision and count bytes."""
    import json

    from apprentice_hw.models import MODELS
    from apprentice_hw.report.figure import plot_footprint
    from apprentice_hw.report.sizing import parse_precision, size_model

    if name not in MODELS.names():
        raise UserError(f"unknown model '{name}'; choose one of: {', '.join(MODELS.names())}")
    labels = tuple(p.strip() for p in precisions.split(",") if p.strip())
    for label in labels:
        try:
            bits = parse_precision(label)
        except ValueError:
            bits = (0, 0)
        if bits is not None and not all(1 < b <= 8 for b in bits):
            raise UserError(f"precision '{label}' is not fp32 or WxAy with 2 to 8 bits each")
    if not MIN_INPUT <= input_size <= MAX_INPUT or not 2 <= classes <= MAX_CLASSES:
        raise UserError(
            f"--input must be from {MIN_INPUT} to {MAX_INPUT} pixels and --classes from 2 to "
            f"{MAX_CLASSES} (sizing exports the model at that size, in memory)"
        )
    policies = {"8": [8], "same": [None], "both": [8, None]}[first_last]
    if fmt == "png":
        policies = [policies[0]]
    sized = {policy: size_model(name, input_size, classes, precisions=labels,
                                first_last_bits=policy) for policy in policies}  # fmt: skip
    if fmt == "png":
        policy = "8-bit" if policies[0] == 8 else "same bits"
        title = f"{name} {input_size}x{input_size}, first/last layer {policy}"
        target = out or Path(f"{name}-{input_size}-footprint.png")
        click.echo(f"wrote {plot_footprint([bar for bar, _ in sized[policies[0]]], title, target)}")
        return
    rows = [
        {"first_last": "8-bit" if policy == 8 else "same", **bar.to_dict()}
        for policy, results in sized.items()
        for bar, _ in results
    ]
    if fmt == "json":
        click.echo(json.dumps({"model": name, "input": input_size, "rows": rows}, indent=2))
        return
    click.echo(f"{name} {input_size}x{input_size}, {classes} classes (shape-only; random weights)")
    click.echo("| precision | first/last layer | weights | activations b1 | activations b8 |")
    click.echo("|---|---|---|---|---|")
    mib = 1024 * 1024
    for row in rows:
        acts = row["activation_bytes"]
        click.echo(
            f"| {row['label']} | {row['first_last']} | {row['weight_bytes'] / mib:.2f} MiB "
            f"| {acts['batch_1'] / mib:.2f} MiB | {acts['batch_8'] / mib:.2f} MiB |"
        )


def _one_line(message: str) -> str:
    return " ".join(str(message).split())


class _Interrupts:
    """Notices Ctrl-C (SIGINT) while a command runs.

    A KeyboardInterrupt raised inside one of TVM's Python callbacks (a pass, MetaSchedule's
    worker pool) comes back out of TVM as a RuntimeError, and a worker killed by the same
    Ctrl-C as a failed build: after a Ctrl-C, whatever the command fails with is reported as
    the interruption, in one line.
    """

    def __init__(self) -> None:
        self.seen = False
        self._previous = None

    def _handler(self, _signum, _frame) -> None:
        self.seen = True
        raise KeyboardInterrupt

    def __enter__(self) -> _Interrupts:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *_exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    def ignore_further(self) -> None:
        """Once an interruption is reported, ignore Ctrl-C: a second one, or the first one
        delivered late (after TVM's C++ code returns), would otherwise escape ``main`` during
        shutdown and end the process by SIGINT instead of exit status 130 (seen once in three
        runs of the verify interruption test)."""
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        self._previous = None  # leave it ignored on exit


def _report_interrupt(args: list[str], debug: bool, interrupts: _Interrupts) -> int:
    interrupts.ignore_further()
    _forget_unhandled_interrupt()
    if debug:
        traceback.print_exc()
    command = next((a for a in args if not a.startswith("-")), "")
    click.echo(f"error: interrupted; {INTERRUPTED.get(command, 'nothing was written')}", err=True)
    return 130


def _forget_unhandled_interrupt() -> None:
    """Clear CPython's "unhandled KeyboardInterrupt" flag before exiting with status 130.

    CPython 3.11 sets that flag whenever a KeyboardInterrupt leaves an ``exec`` of a string
    (``dataclasses`` builds every ``__init__`` that way, so a Ctrl-C during an import does it),
    even when the exception is caught further up; under ``python -m`` the interpreter then ends
    itself by SIGINT after ``main`` returned 130 (the verify interruption test failed so, 1 run
    in 12). Each ``exec`` of a string resets the flag before it runs, so an empty one clears it.
    """
    exec("")  # a constant empty string: resets the flag, runs nothing


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = DEBUG_FLAG in args
    args = [a for a in args if a != DEBUG_FLAG]
    with _Interrupts() as interrupts:
        try:
            result = cli.main(args=args, prog_name="apprentice-hw", standalone_mode=False)
            if interrupts.seen:  # swallowed on the way (a TVM callback's fallback): still one
                return _report_interrupt(args, debug, interrupts)
            return result if isinstance(result, int) else 0
        except click.exceptions.Exit as exc:
            return exc.exit_code
        except (KeyboardInterrupt, click.Abort):
            return _report_interrupt(args, debug, interrupts)
        except Exception as exc:
            if interrupts.seen:
                return _report_interrupt(args, debug, interrupts)
            if debug:
                raise
            return _report_error(exc)


def _report_error(exc: Exception) -> int:
    """One ``error:`` line for a user's mistake (exit 2); anything else keeps its traceback."""
    if isinstance(exc, click.UsageError):
        command = exc.ctx.command_path if exc.ctx else "apprentice-hw"
        click.echo(f"error: {_one_line(exc.format_message())} (see '{command} --help')", err=True)
        return 2
    if isinstance(exc, UserError):
        click.echo(f"error: {_one_line(str(exc))}", err=True)
        return exc.exit_code
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        where = f" writing {exc.filename}" if exc.filename else ""
        click.echo(f"error: no space left on the device{where} ({exc.strerror}); free some space "
                   "or choose another --out; nothing was left half-written", err=True)  # fmt: skip
        return 2
    raise exc


if __name__ == "__main__":
    sys.exit(main())
