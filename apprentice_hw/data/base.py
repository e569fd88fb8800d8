"""The dataset interface shared by all loaders."""

from __future__ import annotations

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

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of one image."""
        return tuple(self.train_x.shape[1:])  # type: ignore[return-value]


DatasetLoader = Callable[[Path | None, int], DatasetSplits]
DATASETS: Registry[DatasetLoader] = Registry("dataset")


def load_dataset(name: str, path: Path | None = None, seed: int = 0) -> DatasetSplits:
    """Load a registered dataset; ``path`` is for datasets read from the user's files."""
    return DATASETS.get(name)(path, seed)
