"""A small, deterministic trainer for in-memory datasets.

SGD with momentum and a cosine learning-rate schedule, one seeded generator for shuffling, and
evaluation after every epoch. The loss is a callable, so the teacher (cross-entropy) and every
distillation scheme (Apprentice loss) share the same loop.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

import torch
from torch import nn

from apprentice_hw.config import TrainSpec
from apprentice_hw.progress import Progress

LossFn = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, dict[str, float]]]


@dataclass(frozen=True)
class EpochMetrics:
    """What one epoch did, written as one JSON line per epoch."""

    network: str
    epoch: int
    lr: float
    train_loss: float
    test_top1: float
    terms: dict[str, float]

    def to_dict(self) -> dict:
        return asdict(self)


def batches(
    x: torch.Tensor, y: torch.Tensor, batch_size: int, generator: torch.Generator | None
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Mini-batches in a seeded random order (or in order when ``generator`` is None)."""
    order = (
        torch.randperm(len(x), generator=generator)
        if generator is not None
        else torch.arange(len(x))
    )
    for start in range(0, len(x), batch_size):
        index = order[start : start + batch_size]
        yield x[index], y[index]


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Logits of ``model`` in eval mode over ``x``."""
    was_training = model.training
    model.eval()
    outputs = [model(xb) for xb, _ in batches(x, x, batch_size, None)]
    model.train(was_training)
    return torch.cat(outputs)


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Top-1 accuracy in [0, 1]."""
    return float((predict(model, x).argmax(dim=1) == y).float().mean())


def cosine_lr(base_lr: float, epoch: int, epochs: int) -> float:
    """Cosine decay from ``base_lr`` to 0 over ``epochs``, evaluated at the start of ``epoch``."""
    return 0.5 * base_lr * (1.0 + math.cos(math.pi * epoch / epochs))


def fit(
    model: nn.Module,
    network: str,
    loss_fn: LossFn,
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    spec: TrainSpec,
    seed: int,
    progress: Progress,
) -> list[EpochMetrics]:
    """Train ``model`` (in place) with ``loss_fn`` and return per-epoch metrics."""
    optimizer = torch.optim.SGD(
        [p for p in model.parameters() if p.requires_grad],
        lr=spec.lr,
        momentum=spec.momentum,
        weight_decay=spec.weight_decay,
        nesterov=spec.momentum > 0,
    )
    generator = torch.Generator().manual_seed(seed)
    history: list[EpochMetrics] = []
    steps_per_epoch = math.ceil(len(train[0]) / spec.batch_size)
    for epoch in range(spec.epochs):
        lr = cosine_lr(spec.lr, epoch, spec.epochs)
        for group in optimizer.param_groups:
            group["lr"] = lr
        model.train()
        total, count, term_sums = 0.0, 0, {}
        bar = progress.bar(
            batches(*train, spec.batch_size, generator),
            desc=f"{network} epoch {epoch + 1}/{spec.epochs}",
            total=steps_per_epoch,
        )
        for xb, yb in bar:
            loss, terms = loss_fn(xb, yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(xb)
            count += len(xb)
            for key, value in terms.items():
                term_sums[key] = term_sums.get(key, 0.0) + value * len(xb)
        metrics = EpochMetrics(
            network=network,
            epoch=epoch + 1,
            lr=lr,
            train_loss=total / count,
            test_top1=evaluate(model, *test),
            terms={k: v / count for k, v in term_sums.items()},
        )
        history.append(metrics)
        progress.message(
            f"    {network} epoch {epoch + 1}/{spec.epochs}: loss {metrics.train_loss:.4f}, "
            f"test top-1 {metrics.test_top1:.2%}"
        )
    model.eval()
    return history


def train_teacher(
    teacher: nn.Module,
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    spec: TrainSpec,
    seed: int,
    progress: Progress,
) -> list[EpochMetrics]:
    """Train the full-precision teacher with plain cross-entropy."""

    def loss_fn(xb: torch.Tensor, yb: torch.Tensor):
        loss = nn.functional.cross_entropy(teacher(xb), yb)
        return loss, {}

    return fit(teacher, "teacher", loss_fn, train, test, spec, seed, progress)
