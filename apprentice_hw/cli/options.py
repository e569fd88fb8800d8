"""Options several commands share."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import click

INPUTS_OPTION = click.option(
    "--inputs", "inputs_path", type=click.Path(path_type=Path), default=None,
    help="A .npy array of inputs (N, C, H, W) for an ONNX model. Default: seeded uniform [0, 1).",
)  # fmt: skip
KERNEL_HELP = (
    "Force a kernel strategy for the quantized layers it supports (see 'apprentice-hw "
    "kernels'); other layers keep the target's choice."
)
TARGET_HELP = "Target name (see 'apprentice-hw targets') or path to a target .toml."
THREADS_OPTION = click.option(
    "--threads", type=int, default=None,
    help="TVM worker threads to time the module with and for the bundle to run with. Default: "
         "the faster of 1 and all cores, measured here.",
)  # fmt: skip


def recipe_options(command: Callable) -> Callable:
    """The options that pick a recipe and override parts of it (shared by train and build)."""
    options = [
        click.option("--recipe", "-r", "recipe_name", default="digits", show_default=True,
                     help="Recipe name (see 'apprentice-hw recipes') or path to a recipe .toml."),
        click.option("--bits", "-b", type=int, default=None,
                     help="Weight bits: 2 (ternary), 3, 4 or 8. Default: the recipe's."),
        click.option("--act-bits", type=int, default=None,
                     help="Activation bits: 2, 4 or 8. Default: the recipe's."),
        click.option("--quant", default=None,
                     help="Quantizer family: float, per-channel, po2, wrpn (default: recipe)."),
        click.option("--scheme", default=None,
                     help="Distillation scheme: A, B, C, none or finetune (C without the teacher). "
                          "Default: the recipe's."),
        click.option("--epochs", type=int, default=None,
                     help="Override the teacher's and the student's epochs."),
        click.option("--data", "data_path", type=click.Path(path_type=Path), default=None,
                     help="Dataset folder, for datasets read from files."),
        click.option("--seed", type=int, default=None, help="Override the recipe's seed."),
        click.option("--teacher", type=click.Path(path_type=Path), default=None,
                     help="A trained fp32 teacher (state dict: a build's teacher.pt, torchvision "
                          "weights for ResNet-18/34/50) instead of training one; schemes B, C."),
        click.option("--student-init", type=click.Path(path_type=Path), default=None,
                     help="Scheme C: fp32 weights of the student's architecture to start from."),
    ]  # fmt: skip
    for option in reversed(options):
        command = option(command)
    return command
