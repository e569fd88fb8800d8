"""A small, deterministic, resumable trainer for in-memory datasets.

One *phase* trains some networks with one loss: the teacher alone, the student against a frozen
teacher, or both jointly (scheme A). SGD with momentum, a registered learning-rate schedule, and
one seeded generator for shuffling and augmentation. After every epoch the phase writes a
checkpoint atomically (weights, optimizer, generator state, history), so a killed run resumed
from it ends with exactly the weights of an uninterrupted run.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from apprentice_hw.atomic import atomic_path
from apprentice_hw.config import TrainSpec
from apprentice_hw.data.augment import AUGMENTATIONS
from apprentice_hw.distill import distributed
from apprentice_hw.errors import TrainingDivergedError, UserError, summarize
from apprentice_hw.progress import Progress
from apprentice_hw.quant.calibration import (
    CALIBRATION_BATCHES,
    calibrate_activations,
    has_runtime_stats,
    reestimate_batchnorm,
)
from apprentice_hw.registry import Registry
from apprentice_hw.report_model import TrainingEpoch
from apprentice_hw.torch_backend import configure_torch

configure_torch()  # every training and evaluation path imports this module

# (images, labels, their positions in the training tensors or None for a loader's batches)
# -> (loss, the loss terms to log)
LossFn = Callable[
    [torch.Tensor, torch.Tensor, torch.Tensor | None], tuple[torch.Tensor, dict[str, float]]
]
Schedule = Callable[[float, int, int], float]
SCHEDULES: Registry[Schedule] = Registry("learning-rate schedule")
EVAL_BATCH = 512


@SCHEDULES.register("cosine")
def cosine_lr(base_lr: float, epoch: int, epochs: int) -> float:
    """Cosine decay from ``base_lr`` towards 0, evaluated at the start of ``epoch``."""
    return 0.5 * base_lr * (1.0 + math.cos(math.pi * epoch / epochs))


@SCHEDULES.register("step")
def step_lr(base_lr: float, epoch: int, epochs: int) -> float:
    """Divide by 10 at 50 % and again at 75 % of the epochs (the ResNet paper's schedule)."""
    return base_lr * 0.1 ** sum(epoch >= int(epochs * f) for f in (0.5, 0.75))


@SCHEDULES.register("constant")
def constant_lr(base_lr: float, epoch: int, epochs: int) -> float:
    return base_lr


# What one epoch did (one line of train_log.jsonl): the very record the report's training
# section holds, so the log, the checkpoints and report.json share one definition.
EpochMetrics = TrainingEpoch


@dataclass
class Phase:
    """One training run: the networks it evaluates, which of them learn, and the loss."""

    name: str
    networks: dict[str, nn.Module]
    trainable: tuple[str, ...]
    loss_fn: LossFn
    spec: TrainSpec


# Training or test data: (images, labels) tensors, or any iterable of (images, labels) batches
# such as a torch DataLoader (the API's ``distill`` takes the user's own loaders).
Batches = tuple[torch.Tensor, torch.Tensor] | Iterable[tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class TrainContext:
    """What every phase of one training run shares.

    With tensors, the trainer draws seeded batches and applies ``augmentation`` itself; with a
    loader, the loader's own order and transforms are used as they are.
    """

    train: Batches
    test: Batches
    augmentation: str
    seed: int
    progress: Progress
    checkpoint_dir: Path | None = None
    resume: bool = False


def batches(
    x: torch.Tensor, y: torch.Tensor, batch_size: int, generator: torch.Generator | None
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Mini-batches in a seeded random order (or in order when ``generator`` is None)."""
    if generator is None:
        order = torch.arange(len(x))
    else:
        order = torch.randperm(len(x), generator=generator)
    for start in range(0, len(x), batch_size):
        index = order[start : start + batch_size]
        yield x[index], y[index]


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = EVAL_BATCH) -> torch.Tensor:
    """Logits of ``model`` in eval mode over ``x``."""
    was_training = model.training
    model.eval()
    outputs = [model(xb) for xb, _ in batches(x, x, batch_size, None)]
    model.train(was_training)
    return torch.cat(outputs)


def topk_accuracy(logits: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    """Fraction of samples whose label is among the ``k`` highest logits."""
    k = min(k, logits.shape[1])
    if k == 1:  # argmax breaks ties (common in quantized logits) the same way as numpy
        return float((logits.argmax(dim=1) == labels).float().mean())
    top = logits.topk(k, dim=1).indices
    return float((top == labels[:, None]).any(dim=1).float().mean())


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Top-1 accuracy in [0, 1]."""
    return topk_accuracy(predict(model, x), y, 1)


def is_tensors(data: Batches) -> bool:
    return isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], torch.Tensor)


def calibration_images(data: Batches, batch_size: int) -> torch.Tensor:
    """The images activation scales are calibrated on: the first batches, in data order."""
    if is_tensors(data):
        return data[0]
    images, count = [], 0
    for xb, _ in data:
        images.append(xb)
        count += len(xb)
        if count >= CALIBRATION_BATCHES * batch_size:
            break
    return torch.cat(images)


def _steps_per_epoch(data: Batches, batch_size: int) -> int | None:
    if is_tensors(data):
        return math.ceil(len(data[0]) / batch_size)
    return len(data) if hasattr(data, "__len__") else None


def epoch_batches(
    context: TrainContext, batch_size: int, generator: torch.Generator
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]:
    """One epoch of (augmented) training batches with each image's position in the training
    tensors (None from a loader), so a loss can look up what it cached per image."""
    if not is_tensors(context.train):
        for xb, yb in context.train:
            yield xb, yb, None
        return
    x, y = context.train
    augment = AUGMENTATIONS.get(context.augmentation)
    order = torch.randperm(len(x), generator=generator)  # the draws ``batches`` makes
    for start in range(0, len(x), batch_size):
        index = order[start : start + batch_size]
        yield augment(x[index], generator), y[index], index


@torch.no_grad()
def test_logits(networks: dict[str, nn.Module], data: Batches) -> tuple[dict, torch.Tensor]:
    """Each network's logits (eval mode) on the test data, and the labels."""
    if is_tensors(data):
        return {name: predict(net, data[0]) for name, net in networks.items()}, data[1]
    modes = {name: net.training for name, net in networks.items()}
    for net in networks.values():
        net.eval()
    logits: dict[str, list] = {name: [] for name in networks}
    labels = []
    for xb, yb in data:
        for name, net in networks.items():
            logits[name].append(net(xb))
        labels.append(yb)
    for name, net in networks.items():
        net.train(modes[name])
    return {name: torch.cat(parts) for name, parts in logits.items()}, torch.cat(labels)


def _checkpoint_path(context: TrainContext, phase: Phase) -> Path | None:
    return None if context.checkpoint_dir is None else context.checkpoint_dir / f"{phase.name}.ckpt"


def _save_checkpoint(path: Path, phase: Phase, optimizer, generator, epoch, history) -> None:
    state = {
        "phase": phase.name,
        "epoch": epoch,
        "networks": {name: phase.networks[name].state_dict() for name in phase.trainable},
        "optimizer": optimizer.state_dict(),
        "generator": generator.get_state(),
        "history": [m.to_dict() for m in history],
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _load_checkpoint(path: Path, phase: Phase, optimizer, generator) -> tuple[int, list]:
    """Restore a phase from its checkpoint: tensors and plain values only.

    ``weights_only=True`` refuses any pickled object that is not a tensor, a number, a string
    or a container of them, so a checkpoint someone else handed over cannot run code here.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        for name in phase.trainable:
            phase.networks[name].load_state_dict(state["networks"][name])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        epoch, history = int(state["epoch"]), [EpochMetrics(**m) for m in state["history"]]
    except Exception as exc:  # damaged zip, refused pickle, other configuration, wrong types
        first = summarize(exc, 200)
        raise UserError(
            f"checkpoint {path} is unreadable or from another configuration ({first}); start "
            "over without --resume"
        ) from exc
    return epoch, history


def _diverged(what: str, phase: Phase) -> TrainingDivergedError:
    return TrainingDivergedError(
        f"training diverged: {what}; the learning rate of the {phase.name} phase (lr = "
        f"{phase.spec.lr:g}) is likely too high for this model and batch size: lower lr in the "
        "recipe (or check the loss weights and tau in [distill])"
    )


def _check_loss(loss_value: float, parameters: list, phase: Phase, epoch: int, batch: int,
                world) -> None:  # fmt: skip
    """Stop at the first batch whose loss is not finite, on every rank at once.

    Under torchrun a rank whose loss is NaN has NaN gradients, and the gradient sum carries
    them to every rank: each sees them at the same batch, with no extra all-reduce per step.
    """
    bad = not math.isfinite(loss_value)
    if world.size > 1 and parameters and parameters[0].grad is not None:
        bad = bad or not bool(torch.isfinite(parameters[0].grad).all())
    if bad:
        where = "" if not math.isfinite(loss_value) else " (on another process)"
        raise _diverged(f"the {phase.name} loss became NaN or infinite{where} in epoch {epoch}, "
                        f"batch {batch}", phase)  # fmt: skip


def _check_outputs(logits: dict[str, torch.Tensor], phase: Phase, epoch: int) -> None:
    """Stop when a network's test outputs are not finite (its weights were ruined)."""
    for name, values in logits.items():
        if not bool(torch.isfinite(values).all()):
            raise _diverged(f"the {name}'s outputs became NaN or infinite in epoch {epoch}", phase)


def run_phase(phase: Phase, context: TrainContext) -> list[EpochMetrics]:
    """Train ``phase`` (in place), checkpointing every epoch; return per-epoch metrics."""
    spec = phase.spec
    schedule = SCHEDULES.get(spec.schedule)
    parameters = [
        p for name in phase.trainable for p in phase.networks[name].parameters() if p.requires_grad
    ]
    optimizer = torch.optim.SGD(
        parameters, lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay,
        nesterov=spec.momentum > 0,
    )  # fmt: skip
    generator = torch.Generator().manual_seed(context.seed)
    history: list[EpochMetrics] = []
    start_epoch = 0
    checkpoint = _checkpoint_path(context, phase)
    world = distributed.current()
    if context.resume and checkpoint is not None and checkpoint.exists():
        start_epoch, history = _load_checkpoint(checkpoint, phase, optimizer, generator)
        context.progress.message(f"    {phase.name}: resumed after epoch {start_epoch}")
    with distributed.replicated_batch():  # every rank calibrates on the same batches
        fixed_images = calibration_images(context.train, spec.batch_size)
        for name in phase.trainable:
            if has_runtime_stats(phase.networks[name]):
                calibrate_activations(phase.networks[name], fixed_images, spec.batch_size)
    steps_per_epoch = _steps_per_epoch(context.train, spec.batch_size)
    for epoch in range(start_epoch, spec.epochs):
        lr = schedule(spec.lr, epoch, spec.epochs)
        for group in optimizer.param_groups:
            group["lr"] = lr
        for name in phase.trainable:
            phase.networks[name].train()
        total, count, term_sums = 0.0, 0, {}
        bar = context.progress.bar(
            epoch_batches(context, spec.batch_size, generator),
            desc=f"{phase.name} epoch {epoch + 1}/{spec.epochs}",
            total=steps_per_epoch,
        )
        for batch, (xb, yb, index) in enumerate(bar, 1):
            # The whole global batch was augmented; each rank takes its share of it: every
            # rank (and a single process) draws the same random numbers in the same order.
            global_count = len(xb)
            xb, yb = distributed.shard(xb, yb, world)
            index = distributed.shard_index(index, world)
            optimizer.zero_grad(set_to_none=True)
            loss_value = 0.0
            if len(xb):
                loss, terms = phase.loss_fn(xb, yb, index)
                (loss * (len(xb) / global_count)).backward()
                loss_value = loss.detach().item()
                total += loss_value * len(xb)
                for key, value in terms.items():
                    term_sums[key] = term_sums.get(key, 0.0) + value * len(xb)
            count += len(xb)
            distributed.sum_gradients(parameters, world)
            _check_loss(loss_value, parameters, phase, epoch + 1, batch, world)
            optimizer.step()
        keys = sorted(term_sums)
        total, count, *sums = distributed.sum_over_ranks(
            [total, count, *(term_sums[k] for k in keys)], world
        )
        term_sums = dict(zip(keys, sums, strict=True))
        with distributed.replicated_batch():  # every rank: the same images, the same result
            for name in phase.trainable:  # statistics of this epoch's final weights
                reestimate_batchnorm(phase.networks[name], fixed_images, spec.batch_size)
        logits, test_labels = test_logits(phase.networks, context.test)
        _check_outputs(logits, phase, epoch + 1)
        metrics = EpochMetrics(
            phase=phase.name,
            epoch=epoch + 1,
            lr=lr,
            train_loss=total / count,
            test_top1={n: topk_accuracy(v, test_labels, 1) for n, v in logits.items()},
            test_top5={n: topk_accuracy(v, test_labels, 5) for n, v in logits.items()},
            terms={k: v / count for k, v in term_sums.items()},
        )
        history.append(metrics)
        if checkpoint is not None and world.is_main:
            _save_checkpoint(checkpoint, phase, optimizer, generator, epoch + 1, history)
        accuracy = ", ".join(f"{n} {a:.2%}" for n, a in metrics.test_top1.items())
        context.progress.message(
            f"    {phase.name} epoch {epoch + 1}/{spec.epochs}: loss {metrics.train_loss:.4f}, "
            f"test top-1 {accuracy}"
        )
    for net in phase.networks.values():
        net.eval()
    return history


def cross_entropy_phase(name: str, model: nn.Module, spec: TrainSpec) -> Phase:
    """A phase that trains ``model`` alone with cross-entropy (teacher, or no distillation)."""

    def loss_fn(xb: torch.Tensor, yb: torch.Tensor, index: torch.Tensor | None):
        return nn.functional.cross_entropy(model(xb), yb), {}

    return Phase(name, {name: model}, (name,), loss_fn, spec)


def train_steps(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, steps: int, batch_size: int = 64
) -> nn.Module:
    """Calibrate activation scales, then ``steps`` seeded SGD steps on random batches.

    For compiler checks across architectures: a briefly trained network has the statistics
    of a trained one, whereas a deep ResNet with random weights is numerically chaotic (it
    turns float32 rounding noise into several output steps), which no runtime can match.
    """
    calibrate_activations(model, images, batch_size)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    generator = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(steps):
        batch = torch.randint(0, len(images), (batch_size,), generator=generator)
        loss = nn.functional.cross_entropy(model(images[batch]), labels[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()
