"""The dataset interface shared by all loaders."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from apprentice_hw.registry import Registry


@dataclass(frozen=True)
class DatasetSplits:
    """A dataset held in memory: float images in NCHW and integer labels."""

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    augmentation: str = "none"  # the dataset's standard training augmentation (a registry name)

    def limit_train(self, count: int, seed: int) -> DatasetSplits:
        """Keep a seeded random ``count`` of the training images (0 keeps all); test is kept."""
        if count <= 0 or count >= len(self.train_x):
            return self
        keep = torch.randperm(len(self.train_x), generator=torch.Generator().manual_seed(seed))
        keep = keep[:count].sort().values
        return dataclasses.replace(self, train_x=self.train_x[keep], train_y=self.train_y[keep])

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of one image."""
        return tuple(self.train_x.shape[1:])  # type: ignore[return-value]


DatasetLoader = Callable[[Path | None, int], DatasetSplits]
DATASETS: Registry[DatasetLoader] = Registry("dataset")


def load_dataset(
    name: str, path: Path | None = None, seed: int = 0, train_limit: int = 0
) -> DatasetSplits:
    """Load a registered dataset; ``path`` is for datasets read from the user's files."""
    return DATASETS.get(name)(path, seed).limit_train(train_limit, seed)
