"""Process-wide PyTorch settings every training and evaluation path shares.

oneDNN (``torch.backends.mkldnn``) is switched off: with torch 2.13.0's oneDNN 3.12, the
backward pass of our small ResNets corrupts the heap on AMD EPYC CPUs without AVX-512
(``corrupted size vs. prev_size`` / segfault within two steps, seen 2026-11-24; the native
kernels are fine). The networks this project trains on CPUs are small, so the native
convolution kernels cost little, and one code path everywhere keeps results reproducible
across machines. ``APPRENTICE_HW_ONEDNN=1`` turns oneDNN back on.
"""

from __future__ import annotations

import os

ONEDNN_ENV = "APPRENTICE_HW_ONEDNN"


def configure_torch() -> None:
    """Apply the settings above (idempotent, cheap)."""
    import torch

    torch.backends.mkldnn.enabled = os.environ.get(ONEDNN_ENV, "") == "1"
