"""``apprentice-hw recipes``: the ready recipes (one TOML file each in pipelines/)."""

from __future__ import annotations

import click

from apprentice_hw.cli.app import cli


@cli.command()
def recipes() -> None:
    """List the ready recipes (one TOML file each in pipelines/)."""
    from apprentice_hw.config import load_recipe, recipe_files

    for name in recipe_files():
        recipe = load_recipe(name)
        click.echo(
            f"{name:<16} W{recipe.weight_bits}A{recipe.act_bits} scheme {recipe.distill.scheme}  "
            f"{recipe.description}"
        )
