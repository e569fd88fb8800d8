"""``apprentice-hw report``: the memory footprint of a build, of builds side by side, or of a
zoo model at any precision (no training)."""

from __future__ import annotations

from pathlib import Path

import click

from apprentice_hw.cli.app import cli
from apprentice_hw.errors import UserError

REPORT_FORMATS = ("md", "json", "png", "html")


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
        _report_build(path, fmt, out)
        return
    if bits is not None:
        precisions = f"fp32,W{bits}A{act_bits if act_bits is not None else bits}"
    elif act_bits is not None:
        raise UserError("--act-bits goes with --bits")
    _report_model(model_name, fmt, out, input_size, classes, precisions, first_last)


def _report_build(path: Path, fmt: str, out: Path | None) -> None:
    """``report BUILD_DIR``: the build's report as Markdown, JSON, the plot or the page."""
    import json

    from apprentice_hw import api
    from apprentice_hw.atomic import write_text
    from apprentice_hw.report.fields import HTML_FILE

    report = api.report(path)  # one line when PATH is not a build or its report is damaged
    if fmt == "md":
        click.echo(report.markdown())
    elif fmt == "json":
        click.echo(json.dumps(report.to_dict(), indent=2))
    elif fmt == "png":
        click.echo(f"wrote {report.plot(out)}")
    else:
        target = out or path / HTML_FILE
        write_text(target, report.html())
        click.echo(f"wrote {target}")


def _report_comparison(directories: list[Path], fmt: str, out: Path | None) -> None:
    """``report --compare``: builds side by side (table, JSON, or one plot)."""
    import json

    from apprentice_hw import api
    from apprentice_hw.report.compare import comparison, comparison_bars, render_comparison
    from apprentice_hw.report.figure import plot_footprint

    reports = api.compare(directories)
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

    from apprentice_hw import api

    labels = tuple(p.strip() for p in precisions.split(",") if p.strip())
    policy = first_last if fmt != "png" else {"both": "8"}.get(first_last, first_last)
    sized = api.size_model(name, input_size=input_size, classes=classes, precisions=labels,
                           first_last=policy)  # fmt: skip
    if fmt == "png":
        click.echo(f"wrote {sized.plot(out)}")
        return
    if fmt == "json":
        click.echo(json.dumps(sized.to_dict(), indent=2))
        return
    click.echo(f"{name} {input_size}x{input_size}, {classes} classes (shape-only; random weights)")
    click.echo("| precision | first/last layer | weights | activations b1 | activations b8 |")
    click.echo("|---|---|---|---|---|")
    mib = 1024 * 1024
    for row in sized.rows:
        acts = row.activation_bytes
        click.echo(
            f"| {row.label} | {row.first_last} | {row.weight_bytes / mib:.2f} MiB "
            f"| {acts[1] / mib:.2f} MiB | {acts[8] / mib:.2f} MiB |"
        )
