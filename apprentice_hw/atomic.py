"""Atomic file and directory writes.

Every artifact is written to a temporary name next to its final place and then renamed: a reader
(or a rerun after Ctrl-C) sees either the previous complete file or the new complete file, never a
half-written one. ``os.replace`` is atomic within one file system, which is why the temporary name
lives in the destination's own directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _default_file_mode() -> int:
    """The mode a plain ``open()`` would give a new file (0o666 minus the umask)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path that becomes ``path`` only if the block finishes without error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.chmod(_default_file_mode())  # mkstemp creates 0600; artifacts are meant to be shared
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as indented JSON to ``path`` atomically."""
    write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


@contextlib.contextmanager
def uninterrupted() -> Iterator[None]:
    """Hold Ctrl-C (SIGINT) until the block has finished, then raise it.

    For a group of writes that must land together (the files of a report and the manifest
    that hashes them, two renames, a batch of tuning records): an interrupt in the middle
    would leave them inconsistent. Outside the main thread signals cannot be handled here,
    and the block simply runs.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, _frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt


def replace_directory(staging: Path, final: Path) -> None:
    """Move a finished staging directory to ``final``, replacing an older ``final`` if present.

    The old directory is first renamed aside, so at every instant ``final`` is either the old
    complete build or the new complete build; Ctrl-C waits for both renames.
    """
    if final.exists():
        aside = final.with_name(f".{final.name}.old-{os.getpid()}")
        with uninterrupted():
            os.replace(final, aside)
            os.replace(staging, final)
        shutil.rmtree(aside, ignore_errors=True)
    else:
        os.replace(staging, final)
