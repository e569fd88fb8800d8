"""``apprentice-hw verify``: Brevitas, ONNX Runtime and the compiled module on the same inputs."""

from __future__ import annotations

from pathlib import Path

import click

from apprentice_hw.cli.app import cli
from apprentice_hw.cli.options import INPUTS_OPTION, KERNEL_HELP


@cli.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--samples", "-n", default=100, show_default=True, help="Inputs to compare.")
@INPUTS_OPTION
@click.option(
    "--target",
    "-t",
    "target_name",
    default=None,
    help="Target whose kernel choices to check (default: the build's, or this machine's).",
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

    from apprentice_hw import api

    result = api.verify(path, samples=samples, inputs=inputs_path, target=target_name,
                        kernel=kernel, tolerance=tolerance)  # fmt: skip
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        click.echo(result.summary())
    return 0 if result.passed else 1
