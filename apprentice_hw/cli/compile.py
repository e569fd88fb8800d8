"""``apprentice-hw compile``: a quantized ONNX model from any tool into a build directory."""

from __future__ import annotations

from pathlib import Path

import click

from apprentice_hw.cli.app import cli, echo_lines
from apprentice_hw.cli.options import INPUTS_OPTION, KERNEL_HELP, TARGET_HELP, THREADS_OPTION


@cli.command(name="compile")
@click.argument("model_path", metavar="MODEL.onnx", type=click.Path(path_type=Path))
@click.option("--target", "-t", "target_name", required=True, help=TARGET_HELP)
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
@THREADS_OPTION
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
    threads: int | None,
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
    from apprentice_hw import api
    from apprentice_hw.backends.compiled import compiled_summary_lines
    from apprentice_hw.progress import Progress

    result = api.compile(
        model_path, target_name, out=out, kernel=kernel, inputs=inputs_path,
        reference=reference_path, samples=samples, tolerance=tolerance, force=force,
        threads=threads, progress=Progress(quiet),
    )  # fmt: skip
    report = result.report
    click.echo(f"build written to {result.out}")
    model = report.model
    click.echo(
        f"  {model.format} model {model.source}: {model.layers - model.float_layers}"
        f" of {model.layers} conv / fully connected layers as integer kernels"
    )
    for layer in result.float_layers:
        click.echo(f"  warning: {layer.name} ({layer.kind}) stays float: {layer.reason}",
                   err=True)  # fmt: skip
    echo_lines(compiled_summary_lines(report, result.out))
