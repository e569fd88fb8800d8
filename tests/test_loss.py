"""The Apprentice loss against a hand computation."""

from __future__ import annotations

import math

import pytest
import torch

from apprentice_hw.distill import apprentice_loss


def _softmax(row: list[float], tau: float = 1.0) -> list[float]:
    exps = [math.exp(v / tau) for v in row]
    return [e / sum(exps) for e in exps]


@pytest.mark.parametrize("tau", [1.0, 2.0])
def test_loss_matches_hand_computation(tau):
    student = [[2.0, 0.5, -1.0], [0.1, 0.2, 0.3]]
    teacher = [[3.0, 0.0, -2.0], [-1.0, 2.0, 0.5]]
    labels = [0, 2]
    alpha, beta, gamma = 1.0, 0.5, 0.5

    teacher_hard = -sum(math.log(_softmax(t)[y]) for t, y in zip(teacher, labels, strict=True)) / 2
    student_hard = -sum(math.log(_softmax(s)[y]) for s, y in zip(student, labels, strict=True)) / 2
    soft = (
        -sum(
            sum(p * math.log(q) for p, q in zip(_softmax(t, tau), _softmax(s, tau), strict=True))
            for t, s in zip(teacher, student, strict=True)
        )
        / 2
    )
    expected = alpha * teacher_hard + beta * student_hard + gamma * soft

    loss = apprentice_loss(
        torch.tensor(student), torch.tensor(teacher), torch.tensor(labels), alpha, beta, gamma, tau
    )
    assert float(loss.teacher_hard) == pytest.approx(teacher_hard, rel=1e-6)
    assert float(loss.student_hard) == pytest.approx(student_hard, rel=1e-6)
    assert float(loss.soft) == pytest.approx(soft, rel=1e-6)
    assert float(loss.total) == pytest.approx(expected, rel=1e-6)


def test_soft_term_is_minimal_when_student_copies_teacher():
    teacher = torch.tensor([[3.0, 0.0, -2.0]])
    labels = torch.tensor([0])
    same = apprentice_loss(teacher.clone(), teacher, labels, 0.0, 0.0, 1.0, 1.0).total
    other = apprentice_loss(teacher.flip(1), teacher, labels, 0.0, 0.0, 1.0, 1.0).total
    entropy = -sum(p * math.log(p) for p in _softmax([3.0, 0.0, -2.0]))
    assert float(same) == pytest.approx(entropy, rel=1e-6)
    assert float(other) > float(same)
