"""The ``apprentice-hw`` command line: one module per command, each parsing its options,
calling the public API (``apprentice_hw.api``) and formatting the result."""

from apprentice_hw.cli import (  # noqa: F401  (each module registers its command)
    build,
    compile,
    deploy,
    emulated_pi,
    kernels,
    recipes,
    report,
    targets,
    train,
    tune,
    verify,
)
from apprentice_hw.cli.app import cli, main

__all__ = ["cli", "main"]
