"""``apprentice-hw deploy``: run a build on a board over TVM RPC, check and time it."""

from __future__ import annotations

from pathlib import Path

import click

from apprentice_hw.cli.app import cli


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
) -> int:  # fmt: skip
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
    from apprentice_hw import api

    def say(message: str) -> None:
        indent = "" if message.startswith("connecting") else "  "
        click.echo(f"{indent}{message}", err=True)

    result = api.deploy(build_dir, tracker=tracker, key=key, host=host, repeat=repeat,
                        number=number, wait_s=wait, on_message=say)  # fmt: skip
    board = api.board_name(tracker, key, host)
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
        f"{result.latency_stdev_ms:.3f}; {result.repeats} runs of {result.number} calls"
        f"{f', {result.threads} threads' if result.threads else ''})"
    )
    click.echo(f"  written to {build_dir / 'report.json'} (section 'deploy')")
    if not result.passed:
        click.echo("error: the board's outputs differ from the host build's; see above", err=True)
        return 1
    return 0
