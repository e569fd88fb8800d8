"""``apprentice-hw targets``: the hardware targets (one TOML file each in targets/)."""

from __future__ import annotations

import click

from apprentice_hw.cli.app import cli


@cli.command()
@click.option("--verbose", "-v", is_flag=True, help="Show TVM target, toolchain and peak rates.")
def targets(verbose: bool) -> None:
    """List the hardware targets (one TOML file each in targets/)."""
    from apprentice_hw.backends import backend_for
    from apprentice_hw.hardware import all_targets

    found = all_targets()
    width = max((len(t.name) for t in found), default=0)
    for target in found:
        backend_for(target).check_target_file(target)  # a kernel name no strategy has: one line
        click.echo(
            f"{target.name:<{width}}  {target.device:<4} {target.arch:<8} {target.cores:>3} "
            f"{target.kind.core_unit:<5} {target.clock_ghz:4.2f} GHz  {target.description}"
        )
        if verbose:
            backend = backend_for(target)
            linker = target.cross_compiler or "host compiler"
            peaks = ", ".join(f"{k} {v:g}" for k, v in target.peak_macs_per_cycle_per_core.items())
            click.echo(f"    file:        {target.source}")
            click.echo(f"    tvm target:  {target.tvm or 'none (not built by TVM)'}")
            click.echo(f"    linker:      {linker}")
            click.echo(
                f"    memory:      {target.memory_mib} MiB, {target.memory_bandwidth_gbs:g} GB/s"
            )
            click.echo(f"    peak MAC/cycle/core: {peaks or 'none (estimated per design)'}")
            click.echo(f"    runs here:   {backend.runs_here_text(target)}")
            for line in backend.listing_lines(target):
                click.echo(f"    {line}")
