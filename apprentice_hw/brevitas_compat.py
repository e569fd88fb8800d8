"""Import Brevitas quietly.

Brevitas warns at import time about optional accelerated kernels (``fast_hadamard_transform``)
that this project never uses; the warning would otherwise appear in every command's output.
"""

from __future__ import annotations

import functools
import warnings
from types import ModuleType


@functools.cache
def brevitas_quant() -> ModuleType:
    """``brevitas.quant``, imported with its import-time warnings silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import brevitas.quant

    return brevitas.quant


@functools.cache
def brevitas_nn() -> ModuleType:
    """``brevitas.nn``, imported with its import-time warnings silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import brevitas.nn

    return brevitas.nn


@functools.cache
def brevitas_export() -> ModuleType:
    """``brevitas.export``, imported with its import-time warnings silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import brevitas.export

    return brevitas.export
