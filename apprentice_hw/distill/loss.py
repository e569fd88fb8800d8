"""The Apprentice distillation loss (Mishra & Marr, ICLR 2018, eq. 1).

``L = alpha*H(y, p_T) + beta*H(y, p_S) + gamma*H(z_T, p_S)`` where ``H`` is cross-entropy,
``p = softmax`` and ``H(z_T, p_S)`` is the cross-entropy between the teacher's soft targets
``softmax(z_T / tau)`` and the student's ``softmax(z_S / tau)``. The paper uses tau = 1 and
alpha = 1, beta = gamma = 0.5. When the teacher is frozen (schemes B and C) the alpha term has no
gradient; it is still computed so the logged loss means the same thing in every scheme.

The soft term uses the teacher's logits detached: in joint training (scheme A) the teacher learns
from the labels (alpha term) only and is never pulled towards the low-precision student.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional


@dataclass(frozen=True)
class ApprenticeLoss:
    """The total loss and its three terms (unweighted), for logging."""

    total: torch.Tensor
    teacher_hard: torch.Tensor  # H(y, p_T)
    student_hard: torch.Tensor  # H(y, p_S)
    soft: torch.Tensor  # H(z_T, p_S)


def soft_cross_entropy(teacher_logits: torch.Tensor, student_logits: torch.Tensor, tau: float):
    """Mean over the batch of ``-sum softmax(z_T/tau) * log_softmax(z_S/tau)``."""
    targets = functional.softmax(teacher_logits / tau, dim=1)
    return -(targets * functional.log_softmax(student_logits / tau, dim=1)).sum(dim=1).mean()


def apprentice_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    alpha: float,
    beta: float,
    gamma: float,
    tau: float,
) -> ApprenticeLoss:
    """Compute the loss; gradients reach the teacher through the alpha term only."""
    teacher_hard = functional.cross_entropy(teacher_logits, labels)
    student_hard = functional.cross_entropy(student_logits, labels)
    soft = soft_cross_entropy(teacher_logits.detach(), student_logits, tau)
    total = alpha * teacher_hard + beta * student_hard + gamma * soft
    return ApprenticeLoss(total, teacher_hard, student_hard, soft)
