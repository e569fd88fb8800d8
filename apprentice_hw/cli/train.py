"""``apprentice-hw train``: train the teacher and distil the student (no export or compile)."""

from __future__ import annotations

from pathlib import Path

import click

from apprentice_hw.cli.app import cli
from apprentice_hw.cli.options import recipe_options


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
    from apprentice_hw import api
    from apprentice_hw.distill import distributed
    from apprentice_hw.progress import Progress

    result = api.train(recipe_name, out=out, resume=resume, force=force,
                       progress=Progress(quiet), **overrides)  # fmt: skip
    if not distributed.current().is_main:
        return
    recipe = result.recipe
    processes = f"{result.processes} processes" if result.processes > 1 else "1 process"
    click.echo(f"training written to {result.out} ({processes})")
    if result.teacher_top1 is not None:
        click.echo(f"  teacher top-1 {result.teacher_top1:.2%}")
    click.echo(
        f"  student W{recipe.weight_bits}A{recipe.act_bits} ({recipe.quant}, scheme "
        f"{recipe.distill.scheme}) top-1 {result.student_top1:.2%}"
    )
