"""MNIST-format IDX files (MNIST, Fashion-MNIST), gzipped or not.

Debian's ``dataset-fashion-mnist`` package installs the real Fashion-MNIST (60k train / 10k test,
28x28, MIT licence) in ``/usr/share/datasets/fashion-mnist``; that folder is the default for
``fashion-mnist``, so the benchmark runs offline. Any folder with the four standard files works.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import torch

from apprentice_hw.data.base import DATASETS, DatasetSplits
from apprentice_hw.errors import UserError

FASHION_MNIST_DEBIAN = Path("/usr/share/datasets/fashion-mnist")
SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _find(folder: Path, stem: str) -> Path:
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.exists():
            return candidate
    raise UserError(f"{folder} has no {stem}[.gz]; point the data path at an MNIST-format folder")


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (magic, dimensions, big-endian data)."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            data = handle.read()
    except (OSError, EOFError) as exc:
        raise UserError(f"cannot read {path}: {exc}") from exc
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise UserError(f"{path} is not an IDX file (bad magic number)")
    ndim = data[3]
    header = 4 + 4 * ndim
    shape = struct.unpack(f">{ndim}I", data[4:header])
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(data) - header != expected:
        raise UserError(f"{path} is truncated or corrupt: {len(data) - header} bytes of data, "
                        f"expected {expected} for shape {shape}")  # fmt: skip
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)


def load_idx_folder(name: str, folder: Path) -> DatasetSplits:
    """Load the standard train/test files from ``folder``; images scaled to [0, 1]."""
    if not folder.is_dir():
        state = "is a file, not a folder" if folder.exists() else "does not exist"
        raise UserError(f"dataset folder {folder} {state}; pass the folder holding the files")
    arrays = {}
    for split, (images, labels) in SPLIT_FILES.items():
        x = read_idx(_find(folder, images))
        y = read_idx(_find(folder, labels))
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise UserError(f"{folder}: {split} images {x.shape} and labels {y.shape} do not match")
        arrays[split] = (
            torch.from_numpy(x.astype(np.float32)[:, None] / 255.0),
            torch.from_numpy(y.astype(np.int64)),
        )
    num_classes = int(max(arrays["train"][1].max(), arrays["test"][1].max())) + 1
    return DatasetSplits(
        name, *arrays["train"], *arrays["test"], num_classes=num_classes, augmentation="crop2"
    )


@DATASETS.register("fashion-mnist")
def load_fashion_mnist(path: Path | None, seed: int) -> DatasetSplits:
    """Fashion-MNIST from ``path`` or from Debian's dataset-fashion-mnist package."""
    folder = path or FASHION_MNIST_DEBIAN
    if path is None and not folder.is_dir():
        raise UserError(
            "Fashion-MNIST not found; install it with 'apt-get install dataset-fashion-mnist' "
            "or give the folder with the IDX files as the data path"
        )
    return load_idx_folder("fashion-mnist", folder)


@DATASETS.register("mnist")
def load_mnist(path: Path | None, seed: int) -> DatasetSplits:
    """MNIST (or any MNIST-format data) from the folder ``path``."""
    if path is None:
        raise UserError("dataset 'mnist' needs a data path: a folder with the four IDX files")
    return load_idx_folder("mnist", path)
