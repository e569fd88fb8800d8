"""One backend per kind of device (cpu, cuda, fpga), registered by name.

``backend_for(target)`` is the one place the code dispatches on a target's kind of device;
``prepare_module``, ``compile_module`` and ``export_module`` are the shortcuts most callers
want (prepare, compile and link ``model`` the way ``target``'s backend does).
"""

from __future__ import annotations

from pathlib import Path

from apprentice_hw.backends import cpu as _cpu  # noqa: F401  (each module registers itself)
from apprentice_hw.backends import cuda as _cuda  # noqa: F401
from apprentice_hw.backends import fpga as _fpga  # noqa: F401
from apprentice_hw.backends.base import BACKENDS, Backend
from apprentice_hw.hardware import Target
from apprentice_hw.options import FpgaOptions


def backend_for(target: Target) -> Backend:
    """The backend of ``target``'s kind of device."""
    return BACKENDS.get(target.device)


def prepare_module(model, target: Target, batch: int = 1, kernel: str | None = None):
    """Canonicalize, import and lower ``model`` for ``target`` at a fixed ``batch``."""
    return backend_for(target).prepare(model, target, batch, kernel)


def compile_module(mod, target: Target, use_tuning: bool = True):
    """Compile a prepared Relax module for ``target`` (tuned schedules unless told not to)."""
    return backend_for(target).compile(mod, target, use_tuning)


def export_module(executable, target: Target, path: Path) -> Path:
    """Link ``executable`` into a shared object for ``target`` (cross-linked when needed)."""
    return backend_for(target).link(executable, target, path)


def validate_target(target: Target, fpga: FpgaOptions | None = None) -> None:
    """What ``target``'s backend checks before any work (compilers, databases, options)."""
    backend_for(target).validate(target, fpga)


__all__ = [
    "BACKENDS",
    "Backend",
    "backend_for",
    "compile_module",
    "export_module",
    "prepare_module",
    "validate_target",
]
