"""Process-wide PyTorch settings every training and evaluation path shares.

oneDNN (``torch.backends.mkldnn``) is switched off on CPUs without AVX-512: with torch
2.13.0's oneDNN 3.12, the backward pass of our small ResNets corrupts the heap on AMD EPYC CPUs
with AVX2 only (``corrupted size vs. prev_size`` or a segfault within two steps, seen
2026-11-24), while the native kernels are fine there. On AVX-512 CPUs oneDNN stays on: it
trains about twice as fast. ``APPRENTICE_HW_ONEDNN=1`` or ``=0`` overrides the choice.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

ONEDNN_ENV = "APPRENTICE_HW_ONEDNN"


@functools.cache
def cpu_has_avx512() -> bool:
    """True when this x86 CPU reports AVX-512F (False elsewhere, or when unknown)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = next((line for line in text.splitlines() if line.startswith("flags")), "")
    return "avx512f" in flags.split()


def onednn_wanted() -> bool:
    """Whether oneDNN should be used on this machine (see the module docstring)."""
    override = os.environ.get(ONEDNN_ENV, "")
    if override in ("0", "1"):
        return override == "1"
    return cpu_has_avx512()


def configure_torch() -> None:
    """Apply the settings above (idempotent, cheap)."""
    import torch

    torch.backends.mkldnn.enabled = onednn_wanted()
