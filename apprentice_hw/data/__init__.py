"""Datasets as registered loaders returning in-memory tensors with pixels in [0, 1].

Every loader is offline: data comes from a package (scikit-learn's digits, Debian's
Fashion-MNIST) or from a path the user gives. Importing the submodules registers them.
"""

from apprentice_hw.data import cifar as _cifar  # noqa: F401  (registers "cifar10")
from apprentice_hw.data import digits as _digits  # noqa: F401  (registers "digits")
from apprentice_hw.data import idx as _idx  # noqa: F401  (registers "mnist", "fashion-mnist")
from apprentice_hw.data import imagefolder as _imagefolder  # noqa: F401  ("imagefolder")
from apprentice_hw.data.base import DATASETS, DatasetSplits, load_dataset

__all__ = ["DATASETS", "DatasetSplits", "load_dataset"]
