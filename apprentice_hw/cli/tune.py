"""``apprentice-hw tune``: time the conv kernels' schedule knobs, here or on a board."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from apprentice_hw.cli.app import cli
from apprentice_hw.cli.options import KERNEL_HELP


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


@cli.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option(
    "--target",
    "-t",
    "target_name",
    default=None,
    help="Target to tune for (default: the build's, or this machine's).",
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
    from apprentice_hw import api

    bar = _TuneBar()
    try:
        result = api.tune(path, target=target_name, trials=trials, time_budget_s=time_budget,
                          top=top, batch=batch, tracker=tracker, key=key, kernel=kernel,
                          on_progress=bar.update,
                          on_message=lambda line: click.echo(line, err=True))  # fmt: skip
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
