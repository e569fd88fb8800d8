"""ImageFolder trees: ``ROOT/train/<class>/*.jpg`` and ``ROOT/val/<class>/*.jpg``.

Images are decoded with Pillow (the ``vision`` extra), resized so the short side is
``size * 8 / 7`` and center-cropped to ``size`` (the usual 256 -> 224 evaluation transform), and
held in memory as uint8, so this suits ImageNet subsets, not all of ImageNet. Class indices
follow the sorted folder names, as in torchvision.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from apprentice_hw.data.base import DATASETS, DatasetSplits
from apprentice_hw.errors import UserError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp"}
DEFAULT_SIZE = 224
SIZE_ENV = "APPRENTICE_HW_IMAGE_SIZE"
VAL_FOLDERS = ("val", "test")


def _pillow():
    try:
        from PIL import Image
    except ImportError as exc:
        raise UserError(
            "ImageFolder data needs Pillow: pip install 'apprentice-hw[vision]'"
        ) from exc
    return Image


def _load_image(path: Path, size: int) -> np.ndarray:
    image_module = _pillow()
    try:
        with image_module.open(path) as image:
            image = image.convert("RGB")
            short = size * 8 // 7
            scale = short / min(image.size)
            resized = image.resize(
                (max(short, round(image.width * scale)), max(short, round(image.height * scale))),
                image_module.BILINEAR,
            )
            left = (resized.width - size) // 2
            top = (resized.height - size) // 2
            crop = resized.crop((left, top, left + size, top + size))
            return np.asarray(crop, dtype=np.uint8).transpose(2, 0, 1)
    except OSError as exc:
        raise UserError(f"cannot decode image {path}: {exc}") from exc


def _load_split(folder: Path, classes: list[str], size: int) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = [], []
    for index, name in enumerate(classes):
        class_dir = folder / name
        if not class_dir.is_dir():
            continue
        for file in sorted(class_dir.iterdir()):
            if file.suffix.lower() in IMAGE_SUFFIXES:
                images.append(_load_image(file, size))
                labels.append(index)
    if not images:
        raise UserError(f"{folder} holds no images in class folders")
    x = torch.from_numpy(np.stack(images).astype(np.float32) / 255.0)
    return x, torch.tensor(labels, dtype=torch.int64)


@DATASETS.register("imagefolder")
def load_imagefolder(path: Path | None, seed: int) -> DatasetSplits:
    """An ImageFolder tree with ``train/`` and ``val/`` (or ``test/``) subfolders."""
    if path is None:
        raise UserError("dataset 'imagefolder' needs a data path: a folder with train/ and val/")
    train_dir = path / "train"
    val_dir = next((path / v for v in VAL_FOLDERS if (path / v).is_dir()), None)
    if not train_dir.is_dir() or val_dir is None:
        raise UserError(f"{path} must contain train/ and val/ (or test/) class folders")
    size = int(os.environ.get(SIZE_ENV, DEFAULT_SIZE))
    classes = sorted(p.name for p in train_dir.iterdir() if p.is_dir())
    if not classes:
        raise UserError(f"{train_dir} has no class folders")
    train_x, train_y = _load_split(train_dir, classes, size)
    test_x, test_y = _load_split(val_dir, classes, size)
    return DatasetSplits(
        "imagefolder", train_x, train_y, test_x, test_y, len(classes), augmentation="crop4-flip"
    )
