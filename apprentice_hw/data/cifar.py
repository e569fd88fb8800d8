"""CIFAR-10 in its "python version" layout: pickled batches in one folder.

``data_batch_1`` .. ``data_batch_5`` and ``test_batch``, each a dict with ``data`` (N x 3072
uint8, channel-major) and ``labels``. The files are not downloadable here; users point at the
folder they have (``cifar-10-batches-py``).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from apprentice_hw.data.base import DATASETS, DatasetSplits
from apprentice_hw.errors import UserError

TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    if not path.exists():
        raise UserError(
            f"{path} is missing; the CIFAR-10 folder needs data_batch_1..5 and test_batch"
        )
    try:
        with path.open("rb") as handle:
            batch = pickle.load(handle, encoding="bytes")
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError) as exc:
        raise UserError(f"{path} is not a CIFAR-10 python batch: {exc!r}") from exc
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(labels):
        raise UserError(f"{path} has data of shape {data.shape}; expected (N, 3072)")
    return data.reshape(-1, 3, 32, 32), labels


@DATASETS.register("cifar10")
def load_cifar10(path: Path | None, seed: int) -> DatasetSplits:
    """CIFAR-10 from the folder ``path`` (images scaled to [0, 1])."""
    if path is None:
        raise UserError("dataset 'cifar10' needs a data path: the cifar-10-batches-py folder")
    if not path.is_dir():
        state = "is a file, not a folder" if path.exists() else "does not exist"
        raise UserError(f"dataset folder {path} {state}; pass the folder holding the files")
    train = [_read_batch(path / name) for name in TRAIN_BATCHES]
    test_x, test_y = _read_batch(path / TEST_BATCH)
    train_x = np.concatenate([x for x, _ in train])
    train_y = np.concatenate([y for _, y in train])

    def to_float(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(x.astype(np.float32) / 255.0)

    return DatasetSplits(
        "cifar10", to_float(train_x), torch.from_numpy(train_y), to_float(test_x),
        torch.from_numpy(test_y), num_classes=10, augmentation="crop4-flip",
    )  # fmt: skip
