"""Where the data folders (``targets/``, ``pipelines/``) are found.

In a source checkout or an editable install they sit next to the package; a wheel carries copies
inside the package under ``_bundled/`` (see ``setup.py``). Users add their own folders through
environment variables, so adding a target or recipe never requires editing the package.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
CACHE_ENV = "APPRENTICE_HW_CACHE"


def cache_root() -> Path:
    """Where tuning records and the emulated Pi live: ``$APPRENTICE_HW_CACHE`` or
    ``~/.cache/apprentice-hw`` (outside the source tree, shared by every checkout)."""
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "apprentice-hw"))


def data_dirs(kind: str, env_var: str) -> list[Path]:
    """Folders searched for ``kind`` files, highest priority first.

    ``env_var`` holds extra folders separated by ``os.pathsep``; they come first so a user's file
    can shadow a shipped one of the same name.
    """
    extra = [Path(p) for p in os.environ.get(env_var, "").split(os.pathsep) if p]
    candidates = [*extra, PACKAGE_DIR.parent / kind, PACKAGE_DIR / "_bundled" / kind]
    seen: list[Path] = []
    for folder in candidates:
        if folder.is_dir() and folder.resolve() not in [s.resolve() for s in seen]:
            seen.append(folder)
    return seen
