"""Activation-scale initialization by calibration, before quantization-aware training.

Brevitas otherwise initializes each learned activation scale from statistics of the first
training batches, while those batches are also training the network. Calibrating first, on a
fixed set of training batches in data order with quantization disabled (Brevitas'
``calibration_mode``), makes the starting point independent of the batch order and of how a
batch is split across data-parallel ranks, and gives training a sensible start.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

CALIBRATION_BATCHES = 8


def has_runtime_stats(model: nn.Module) -> bool:
    """True when ``model`` has Brevitas scales still waiting for their statistics."""
    return any(
        hasattr(m, "collect_stats_steps") and getattr(m, "counter", 1) == 0 for m in model.modules()
    )


@torch.no_grad()
def calibrate_activations(
    model: nn.Module, images: torch.Tensor, batch_size: int, batches: int = CALIBRATION_BATCHES
) -> None:
    """Initialize ``model``'s activation scales from its first ``batches`` training batches."""
    with warnings.catch_warnings():  # Brevitas warns about optional kernels at import time
        warnings.simplefilter("ignore")
        from brevitas.graph.calibrate import calibration_mode

    was_training = model.training
    with calibration_mode(model):
        for start in range(0, min(len(images), batches * batch_size), batch_size):
            model(images[start : start + batch_size])
    model.train(was_training)


@torch.no_grad()
def reestimate_batchnorm(
    model: nn.Module, images: torch.Tensor, batch_size: int, batches: int = CALIBRATION_BATCHES
) -> None:
    """Recompute every BatchNorm's running mean and variance for the model's current weights.

    Why: during training the running statistics are an average over the last few dozen
    batches, taken while the weights moved; a low-precision student's codes flip under small
    weight changes, so at the end of an epoch (even the last, at a learning rate near zero) the
    statistics can describe another network: the test top-1 of one ternary student swung by 6
    points between its last two epochs and recovered fully with recomputed statistics. Only
    the BatchNorm layers run in training mode for this pass (no gradients, a cumulative average
    over the first ``batches`` training batches); quantizers stay as they are, and the weights
    and the training trajectory do not change (training normalizes with batch statistics).
    """
    batchnorm = nn.modules.batchnorm._BatchNorm
    norms = [m for m in model.modules() if isinstance(m, batchnorm) and m.track_running_stats]
    if not norms:
        return
    was_training = model.training
    model.eval()
    momenta = [norm.momentum for norm in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average over the pass
        norm.train()
    for start in range(0, min(len(images), batches * batch_size), batch_size):
        model(images[start : start + batch_size])
    for norm, momentum in zip(norms, momenta, strict=True):
        norm.momentum = momentum
    model.train(was_training)


@torch.no_grad()
def calibrate_untrained(model: nn.Module, images: torch.Tensor, batch_size: int = 64) -> nn.Module:
    """Give an untrained student realistic statistics: BatchNorm averages, then activation scales.

    Used to check the compiler on every zoo architecture without training each one: the
    numbers flowing through the network then look like a trained network's (no saturated or
    dead quantizers), which is what integer-vs-float checks need.
    """
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # cumulative average over every batch seen
    model.train()
    for start in range(0, len(images), batch_size):
        model(images[start : start + batch_size])
    model.eval()
    calibrate_activations(model, images, batch_size)
    return model.eval()
