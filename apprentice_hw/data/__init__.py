"""Datasets as registered loaders returning in-memory tensors.

Every loader is offline: data comes from a package (scikit-learn's digits) or a path the user
gives. Importing the submodules registers them.
"""

from apprentice_hw.data import digits as _digits  # noqa: F401  (registers "digits")
from apprentice_hw.data.base import DATASETS, DatasetSplits, load_dataset

__all__ = ["DATASETS", "DatasetSplits", "load_dataset"]
