"""``apprentice-hw kernels``: the kernel strategies for quantized layers."""

from __future__ import annotations

import click

from apprentice_hw.cli.app import cli


@cli.command()
def kernels() -> None:
    """List the kernel strategies for quantized layers (pick one with 'build --kernel')."""
    from apprentice_hw.lowering import KERNEL_STRATEGIES

    for name in KERNEL_STRATEGIES.names():
        click.echo(f"{name:<10} {KERNEL_STRATEGIES.get(name).description}")
