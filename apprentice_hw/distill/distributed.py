"""Data-parallel training across processes (``torchrun``) on CPUs with the gloo backend.

Every rank holds the whole dataset and draws the same seeded batch order and augmentation; each
takes a contiguous shard of every global batch. Gradients are summed over ranks after each rank
scaled its loss by its share of the global batch, which equals the single-process gradient of the
global batch. PyTorch's SyncBatchNorm refuses CPU tensors, so :class:`SyncBatchNorm2d` here
all-reduces the per-channel sums instead: batch statistics are those of the global batch, as in a
single process. With both, a two-process run matches a one-process run up to float rounding.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class World:
    """This process's rank and the number of processes (1 when not distributed)."""

    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def current() -> World:
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size())
    return World()


def init_from_env() -> World:
    """Join the process group when started by ``torchrun`` (``WORLD_SIZE`` > 1)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("gloo")
    return current()


def barrier() -> None:
    if current().size > 1:
        dist.barrier()


def shard(x: torch.Tensor, y: torch.Tensor, world: World) -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's contiguous share of a global batch (sizes differ by at most one)."""
    if world.size == 1:
        return x, y
    return x.tensor_split(world.size)[world.rank], y.tensor_split(world.size)[world.rank]


def shard_index(index: torch.Tensor | None, world: World) -> torch.Tensor | None:
    """This rank's share of a batch's dataset positions, split like ``shard``'s images."""
    if index is None or world.size == 1:
        return index
    return index.tensor_split(world.size)[world.rank]


def sum_gradients(parameters: list[nn.Parameter], world: World) -> None:
    """Sum every gradient over the ranks (missing gradients count as zero)."""
    if world.size == 1:
        return
    for parameter in parameters:
        if parameter.grad is None:
            parameter.grad = torch.zeros_like(parameter)
        dist.all_reduce(parameter.grad, op=dist.ReduceOp.SUM)


def sum_over_ranks(values: list[float], world: World) -> list[float]:
    """Element-wise sum of ``values`` over the ranks (for epoch metrics)."""
    if world.size == 1:
        return values
    tensor = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.tolist()


def _all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Differentiable sum over the ranks (the identity in a single process)."""
    if current().size == 1:
        return tensor
    import warnings

    from torch.distributed.nn.functional import all_reduce

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # deprecated name, same function
        return all_reduce(tensor, op=dist.ReduceOp.SUM)


_replicated_batch = False


@contextlib.contextmanager
def replicated_batch() -> Iterator[None]:
    """Within this block every rank runs the *same* whole batch (e.g. calibration), so
    BatchNorm uses its local statistics: PyTorch's own kernel, bit-identical to one process."""
    global _replicated_batch
    previous, _replicated_batch = _replicated_batch, True
    try:
        yield
    finally:
        _replicated_batch = previous


class SyncBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics cover the global batch of all ranks (CPU, gloo)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or _replicated_batch:
            return super().forward(x)
        channels = x.shape[1]
        # float64 sums are exact enough that one full-batch sum and the sum of per-rank sums
        # round to the same float32 statistics.
        wide = x.double()
        count = torch.tensor([x.numel() / channels], dtype=torch.float64)
        local = torch.cat([wide.sum(dim=(0, 2, 3)), (wide * wide).sum(dim=(0, 2, 3)), count])
        total = _all_reduce_sum(local)
        n = total[-1]
        mean = (total[:channels] / n).to(x.dtype)
        var = (total[channels : 2 * channels] / n - (total[:channels] / n) ** 2).to(x.dtype)
        with torch.no_grad():
            self.num_batches_tracked += 1
            # momentum None: a cumulative average, as torch's BatchNorm computes it
            momentum = self.momentum
            if momentum is None:
                momentum = 1.0 / float(self.num_batches_tracked)
            self.running_mean.mul_(1 - momentum).add_(momentum * mean.detach())
            unbiased = var.detach() * n / (n - 1)
            self.running_var.mul_(1 - momentum).add_(momentum * unbiased)
        shape = (1, channels, 1, 1)
        normalized = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        return normalized * self.weight.view(shape) + self.bias.view(shape)


def convert_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm2d in ``module`` by :class:`SyncBatchNorm2d`, keeping its state."""
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            synced = SyncBatchNorm2d(child.num_features, child.eps, child.momentum)
            synced.load_state_dict(child.state_dict())
            setattr(module, name, synced)
        else:
            convert_batchnorm(child)
    return module


def plain_batchnorm(module: nn.Module) -> nn.Module:
    """Undo :func:`convert_batchnorm` in place: every :class:`SyncBatchNorm2d` back to a
    BatchNorm2d with its state (in eval mode the two compute the same; tools that match the
    exact type, such as ``torch.fx``'s BatchNorm folding, then treat both runs alike)."""
    for name, child in module.named_children():
        if type(child) is SyncBatchNorm2d:
            plain = nn.BatchNorm2d(child.num_features, child.eps, child.momentum)
            plain.load_state_dict(child.state_dict())
            plain.train(child.training)
            setattr(module, name, plain)
        else:
            plain_batchnorm(child)
    return module
