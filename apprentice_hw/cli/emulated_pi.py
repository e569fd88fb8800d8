"""``apprentice-hw emulated-pi``: an emulated Raspberry Pi 4 behind a local TVM tracker."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import click

from apprentice_hw.cli.app import cli
from apprentice_hw.deploy import emulated_pi as pi_defaults  # light: no ONNX or TVM


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
    from apprentice_hw import api

    pi = api.emulated_pi(folder, mirror=mirror, port=port,
                         on_message=lambda m: click.echo(m, err=True))  # fmt: skip
    click.echo(f"emulated Pi ready in {pi.folder}; its Python: {pi.python}")
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
