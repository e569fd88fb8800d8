"""scikit-learn's handwritten digits: the embedded default dataset.

1797 real 8x8 grey-level images (0..16) of ten digits that ship inside scikit-learn, so the
default pipeline runs offline in about a minute. Pixels are scaled to [0, 1], which the 8-bit
input quantizer represents well. The split is stratified and seeded: 80 % train, 20 % test.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from apprentice_hw.data.base import DATASETS, DatasetSplits
from apprentice_hw.errors import UserError

TEST_FRACTION = 0.2


@DATASETS.register("digits")
def load_digits(path: Path | None, seed: int) -> DatasetSplits:
    """Load the digits, ignoring ``path`` (they come from the package)."""
    if path is not None:
        raise UserError("dataset 'digits' ships with scikit-learn; remove the data path option")
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split

    bunch = sklearn_digits()
    images = (bunch.images.astype(np.float32) / 16.0)[:, None, :, :]
    labels = bunch.target.astype(np.int64)
    train_x, test_x, train_y, test_y = train_test_split(
        images, labels, test_size=TEST_FRACTION, random_state=seed, stratify=labels
    )
    return DatasetSplits(
        name="digits",
        train_x=torch.from_numpy(train_x),
        train_y=torch.from_numpy(train_y),
        test_x=torch.from_numpy(test_x),
        test_y=torch.from_numpy(test_y),
        num_classes=10,
        augmentation="shift1",
    )
