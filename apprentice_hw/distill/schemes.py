"""Distillation schemes as registry entries.

A scheme decides where the student starts and which networks learn. Scheme B (the paper's
"distil a trained, frozen teacher into a student trained from scratch") is implemented here;
schemes A and C register themselves the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from apprentice_hw.config import DistillSpec, TrainSpec
from apprentice_hw.distill.loss import apprentice_loss
from apprentice_hw.distill.trainer import EpochMetrics, fit
from apprentice_hw.progress import Progress
from apprentice_hw.registry import Registry


@dataclass(frozen=True)
class SchemeInputs:
    """Everything a scheme needs; the teacher arrives trained."""

    teacher: nn.Module
    student: nn.Module
    train: tuple[torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor]
    spec: TrainSpec
    distill: DistillSpec
    seed: int
    progress: Progress


Scheme = Callable[[SchemeInputs], list[EpochMetrics]]
SCHEMES: Registry[Scheme] = Registry("distillation scheme")


def freeze(model: nn.Module) -> None:
    """Put ``model`` in eval mode and stop its gradients (BatchNorm statistics stay fixed too)."""
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)


@SCHEMES.register("B")
def scheme_b(inputs: SchemeInputs) -> list[EpochMetrics]:
    """Scheme B: frozen trained teacher, student from random initialization."""
    teacher, student, d = inputs.teacher, inputs.student, inputs.distill
    freeze(teacher)

    def loss_fn(xb: torch.Tensor, yb: torch.Tensor):
        with torch.no_grad():
            teacher_logits = teacher(xb)
        loss = apprentice_loss(student(xb), teacher_logits, yb, d.alpha, d.beta, d.gamma, d.tau)
        terms = {
            "H(y,p_T)": loss.teacher_hard.item(),
            "H(y,p_S)": loss.student_hard.detach().item(),
            "H(z_T,p_S)": loss.soft.detach().item(),
        }
        # The alpha term has no gradient here (frozen teacher); it is logged, not optimized.
        return loss.total, terms

    return fit(
        student,
        "student",
        loss_fn,
        inputs.train,
        inputs.test,
        inputs.spec,
        inputs.seed,
        inputs.progress,
    )


def run_scheme(name: str, inputs: SchemeInputs) -> list[EpochMetrics]:
    """Run the registered scheme ``name``."""
    return SCHEMES.get(name)(inputs)
