"""``apprentice-hw build``: train, distil, export, compile and report in one go."""

from __future__ import annotations

from pathlib import Path

import click

from apprentice_hw.cli.app import cli, echo_lines
from apprentice_hw.cli.options import KERNEL_HELP, TARGET_HELP, THREADS_OPTION, recipe_options


@cli.command()
@click.option("--target", "-t", "target_name", required=True, help=TARGET_HELP)
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
@THREADS_OPTION
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
    threads: int | None,
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
    from apprentice_hw import api
    from apprentice_hw.hardware import get_target
    from apprentice_hw.progress import Progress

    target = get_target(target_name)
    fpga = api.fpga_options(target, reuse, fps, synthesize)
    note = api.default_quant_note(target, overrides.get("quant"))
    options = api.build_options(
        target, recipe_name, out=out, kernel=kernel, force=force, resume=resume, fpga=fpga,
        threads=threads, **overrides,
    )  # fmt: skip
    if note and not quiet:
        click.echo(note, err=True)
    result = api.build_from(options, Progress(quiet))
    echo_lines(result.summary_lines())
