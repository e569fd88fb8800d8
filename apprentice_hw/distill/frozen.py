"""A frozen teacher's soft targets at the least cost (schemes B and C).

The teacher does not learn in these schemes, so every step only needs its logits:

- computed without autograd, by an inference copy whose BatchNorm layers are folded into the
  preceding convolutions (``torch.fx``; same logits up to float rounding, about 15 % less time
  for the zoo's ResNets). A teacher fx cannot trace runs as it is.
- computed once for the whole training set when its images do not change between epochs (no
  augmentation, tensors rather than a loader): each step then looks its batch up by position,
  and a distillation step costs what a plain quantization-aware step costs.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from apprentice_hw.distill import distributed
from apprentice_hw.distill.trainer import Batches, is_tensors, predict


def freeze(model: nn.Module) -> None:
    """Put ``model`` in eval mode and stop its gradients (BatchNorm statistics stay fixed too)."""
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)


def inference_copy(teacher: nn.Module) -> nn.Module:
    """An eval-mode copy of ``teacher`` with BatchNorm folded in, or ``teacher`` itself when
    its forward cannot be traced (a user's model with data-dependent control flow)."""
    from torch.fx.experimental.optimization import fuse

    try:  # under torchrun the teacher's BatchNorms are SyncBatchNorm2d: fold them alike
        return fuse(distributed.plain_batchnorm(copy.deepcopy(teacher)).eval())
    except Exception:
        return teacher


class TeacherTargets:
    """The frozen teacher's logits for a training batch."""

    def __init__(self, teacher: nn.Module, train: Batches, augmentation: str) -> None:
        freeze(teacher)
        self.forward = inference_copy(teacher)
        # Fixed images: one pass now instead of one per epoch.
        fixed = is_tensors(train) and augmentation == "none"
        self.cached = predict(self.forward, train[0]) if fixed else None

    def __call__(self, images: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor:
        if self.cached is not None and index is not None:
            return self.cached[index]
        with torch.no_grad():  # not inference_mode: the loss saves these for its backward
            return self.forward(images)
