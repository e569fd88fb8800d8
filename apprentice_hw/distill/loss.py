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


class DistillationLoss(torch.nn.Module):
    """The Apprentice loss as a reusable ``torch.nn.Module`` for your own training loop.

    ``criterion = DistillationLoss(alpha=1.0, beta=0.5, gamma=0.5, tau=1.0)``;
    ``criterion(student_logits, teacher_logits, labels)`` is the total (a scalar tensor to
    ``backward()``), ``criterion.components(...)`` the total and its three terms. A frozen
    teacher's logits may come from ``torch.no_grad()``; in joint training (scheme A) the
    teacher learns from the alpha term only.
    """

    def __init__(self, alpha: float = 1.0, beta: float = 0.5, gamma: float = 0.5,
                 tau: float = 1.0) -> None:  # fmt: skip
        super().__init__()
        from apprentice_hw.config import DistillSpec

        DistillSpec(alpha=alpha, beta=beta, gamma=gamma, tau=tau)  # the recipe's range checks
        self.alpha, self.beta, self.gamma, self.tau = alpha, beta, gamma, tau

    def components(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                   labels: torch.Tensor) -> ApprenticeLoss:  # fmt: skip
        return apprentice_loss(student_logits, teacher_logits, labels, self.alpha, self.beta,
                               self.gamma, self.tau)  # fmt: skip

    def forward(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                labels: torch.Tensor) -> torch.Tensor:  # fmt: skip
        return self.components(student_logits, teacher_logits, labels).total

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, beta={self.beta}, gamma={self.gamma}, tau={self.tau}"
