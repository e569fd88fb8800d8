"""Dataset loaders on small files written in each real format, plus the shipped datasets."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from apprentice_hw.data import DATASETS, load_dataset
from apprentice_hw.data.augment import AUGMENTATIONS
from apprentice_hw.data.idx import FASHION_MNIST_DEBIAN, SPLIT_FILES
from apprentice_hw.errors import UserError


def _idx_bytes(array: np.ndarray) -> bytes:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    return header + array.astype(np.uint8).tobytes()


def _write_idx_folder(folder: Path, gz: bool, train: int = 12, test: int = 6) -> None:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for split, count in (("train", train), ("test", test)):
        images, labels = SPLIT_FILES[split]
        x = rng.integers(0, 256, (count, 28, 28))
        y = np.arange(count) % 10
        for stem, array in ((images, x), (labels, y)):
            data = _idx_bytes(array)
            if gz:
                (folder / f"{stem}.gz").write_bytes(gzip.compress(data))
            else:
                (folder / stem).write_bytes(data)


@pytest.mark.parametrize("gz", [True, False])
def test_idx_folder_loads(tmp_path, gz):
    _write_idx_folder(tmp_path, gz)
    data = load_dataset("mnist", tmp_path)
    assert data.train_x.shape == (12, 1, 28, 28) and data.test_x.shape == (6, 1, 28, 28)
    assert float(data.train_x.min()) >= 0.0 and float(data.train_x.max()) <= 1.0
    assert data.train_y.tolist() == [i % 10 for i in range(12)]
    assert data.num_classes == 10


def test_truncated_idx_is_a_user_error(tmp_path):
    _write_idx_folder(tmp_path, gz=False)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(UserError, match="truncated or corrupt"):
        load_dataset("mnist", tmp_path)


def test_bad_magic_and_missing_files_are_user_errors(tmp_path):
    _write_idx_folder(tmp_path, gz=False)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(b"\x01\x02\x03\x04junk")
    with pytest.raises(UserError, match="not an IDX file"):
        load_dataset("mnist", tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(UserError, match="has no t10k-labels-idx1-ubyte"):
        load_dataset("mnist", tmp_path)
    with pytest.raises(UserError, match="needs a data path"):
        load_dataset("mnist")
    with pytest.raises(UserError, match="does not exist"):
        load_dataset("mnist", tmp_path / "nope")


def test_real_fashion_mnist_from_the_debian_package():
    assert FASHION_MNIST_DEBIAN.is_dir(), "install with: apt-get install dataset-fashion-mnist"
    data = load_dataset("fashion-mnist", train_limit=1000)
    assert data.train_x.shape == (1000, 1, 28, 28) and data.test_x.shape == (10000, 1, 28, 28)
    assert torch.bincount(data.test_y).tolist() == [1000] * 10


def _write_cifar(folder: Path, per_batch: int = 4) -> None:
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
        batch = {
            b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
            b"labels": list(range(per_batch)),
        }
        with (folder / name).open("wb") as handle:
            pickle.dump(batch, handle)


def test_cifar10_python_batches(tmp_path):
    _write_cifar(tmp_path / "cifar")
    data = load_dataset("cifar10", tmp_path / "cifar")
    assert data.train_x.shape == (20, 3, 32, 32) and data.test_x.shape == (4, 3, 32, 32)
    assert data.augmentation == "crop4-flip"
    raw = pickle.load((tmp_path / "cifar" / "test_batch").open("rb"))[b"data"][0]
    assert torch.allclose(data.test_x[0].flatten(), torch.tensor(raw, dtype=torch.float32) / 255)


def test_cifar10_errors(tmp_path):
    _write_cifar(tmp_path / "cifar")
    (tmp_path / "cifar" / "data_batch_3").unlink()
    with pytest.raises(UserError, match="data_batch_3 is missing"):
        load_dataset("cifar10", tmp_path / "cifar")
    (tmp_path / "cifar" / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(UserError, match="not a CIFAR-10 python batch"):
        load_dataset("cifar10", tmp_path / "cifar")


def test_imagefolder(tmp_path, monkeypatch):
    from PIL import Image

    for split, count in (("train", 3), ("val", 1)):
        for index, name in enumerate(("cat", "dog")):
            folder = tmp_path / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                color = (255 * index, 100, 20 * i)
                Image.new("RGB", (40 + 10 * i, 30), color).save(folder / f"{i}.png")
    monkeypatch.setenv("APPRENTICE_HW_IMAGE_SIZE", "16")
    data = load_dataset("imagefolder", tmp_path)
    assert data.train_x.shape == (6, 3, 16, 16) and data.test_x.shape == (2, 3, 16, 16)
    assert data.train_y.tolist() == [0, 0, 0, 1, 1, 1] and data.num_classes == 2
    assert float(data.test_x[1, 0].mean()) == pytest.approx(1.0)  # dog: red channel 255
    (tmp_path / "train" / "cat" / "bad.png").write_bytes(b"not an image")
    with pytest.raises(UserError, match="cannot decode image"):
        load_dataset("imagefolder", tmp_path)


def test_every_dataset_rejects_or_needs_a_path_clearly(tmp_path):
    for name in DATASETS.names():
        if name in ("digits", "fashion-mnist"):
            continue
        with pytest.raises(UserError, match="needs a data path"):
            load_dataset(name)
    with pytest.raises(UserError, match="ships with scikit-learn"):
        load_dataset("digits", tmp_path)


def test_train_limit_is_a_seeded_subset():
    full = load_dataset("digits")
    a, b = full.limit_train(100, seed=3), full.limit_train(100, seed=3)
    assert len(a.train_x) == 100 and torch.equal(a.train_x, b.train_x)
    assert not torch.equal(a.train_x, full.limit_train(100, seed=4).train_x)
    assert torch.equal(a.test_x, full.test_x)


@pytest.mark.parametrize("name", AUGMENTATIONS.names())
def test_augmentations_keep_shape_and_are_seeded(name):
    x = torch.rand(16, 3, 8, 8)
    first = AUGMENTATIONS.get(name)(x, torch.Generator().manual_seed(0))
    again = AUGMENTATIONS.get(name)(x, torch.Generator().manual_seed(0))
    assert first.shape == x.shape and torch.equal(first, again)


def test_crop_shifts_content():
    x = torch.zeros(64, 1, 5, 5)
    x[:, :, 2, 2] = 1.0
    shifted = AUGMENTATIONS.get("shift1")(x, torch.Generator().manual_seed(0))
    positions = {tuple(torch.nonzero(img[0])[0].tolist()) for img in shifted}
    assert positions <= {(r, c) for r in (1, 2, 3) for c in (1, 2, 3)} and len(positions) > 3
