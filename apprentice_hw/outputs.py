"""Output directories: where ``--out`` really points, whether ``--force`` may replace it, and
the lock that lets one command at a time write it.

``build`` and ``train`` replace a directory only when apprentice-hw wrote it: a build (its
``manifest.json`` lists the files it wrote) or a training run (its ``recipe.json`` beside
checkpoints and weights). Anything else in it (a user's notes, a dataset, a source tree) makes
``--force`` refuse with one line naming what it found, so a mistyped ``-o`` never deletes a
user's files. ``.`` and the folders above the working directory are never replaced: the
command would pull the floor from under the shell that runs it.

Symbolic links are followed before any work: ``-o link --force`` replaces the directory the
link names and keeps the link; a link to nothing is refused at once.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from apprentice_hw.errors import UserError

CHECKPOINTS = "checkpoints"
RECIPE_RECORD = "recipe.json"
# What a training run writes into its --out (training.py); a build keeps them too.
TRAIN_ENTRIES = frozenset({CHECKPOINTS, RECIPE_RECORD, "teacher.pt", "student.pt",
                           "train_log.jsonl", "train_curve.png"})  # fmt: skip
# Folders of a build (their files are the build's own; the manifest lists top-level files).
BUILD_FOLDERS = frozenset({"bundle", "checkpoints", "hls"})
BUILD_MANIFEST = "manifest.json"
# The longest output name: the staging (".NAME.partial") and lock names must fit in 255 bytes.
MAX_NAME_BYTES = 200


def resolve_output(out: Path, option: str = "--out") -> Path:
    """The directory ``out`` names, checked before any work: links followed, name length.

    A dangling symbolic link, or a name too long for the staging directory beside it, is a
    one-line error here rather than a failure after minutes of training.
    """
    out = Path(out)
    if out.is_symlink():
        target = out.resolve()
        if not target.exists():
            raise UserError(
                f"{option} {out} is a symbolic link to {target}, which does not exist; create "
                f"that directory or choose another {option}"
            )
        out = target
    name_bytes = len(out.absolute().name.encode())
    if name_bytes > MAX_NAME_BYTES:
        raise UserError(
            f"{option} name '{out.name[:40]}...' is {name_bytes} bytes long; keep it under "
            f"{MAX_NAME_BYTES} (apprentice-hw puts a staging directory with a longer name "
            "beside it)"
        )
    return out.absolute()


def _written_by_us(directory: Path) -> frozenset[str] | None:
    """The entry names apprentice-hw wrote into ``directory``, or None if it is not ours."""
    manifest_path = directory / BUILD_MANIFEST
    if manifest_path.is_file():
        try:
            manifest = json.loads(manifest_path.read_text())
            artifacts = manifest["artifacts"] if "apprentice_hw_version" in manifest else None
        except (ValueError, TypeError, KeyError, OSError):
            artifacts = None
        if isinstance(artifacts, dict):
            top = {Path(name).parts[0] for name in artifacts if Path(name).parts}
            return frozenset(top | BUILD_FOLDERS | TRAIN_ENTRIES | {BUILD_MANIFEST})
    record = directory / RECIPE_RECORD
    if record.is_file():
        try:
            ours = isinstance(json.loads(record.read_text()).get("student"), dict)
        except (ValueError, AttributeError, OSError):
            ours = False
        if ours:
            return TRAIN_ENTRIES
    return None


def _is_leftover(name: str) -> bool:
    """A temporary file of an atomic write cut short (``.NAME.XXXX.tmp``)."""
    return name.startswith(".") and name.endswith(".tmp")


def check_replaceable(directory: Path, option: str = "--out") -> None:
    """Refuse, in one line, to replace a directory apprentice-hw did not write.

    An empty directory may be replaced; so may a build or a training run holding nothing but
    what apprentice-hw wrote there. Never ``.`` or a folder above the working directory.
    """
    directory = Path(directory).absolute()
    if not directory.exists():
        return
    if not directory.is_dir():
        raise UserError(f"{option} {directory} is a file, not a directory; choose another {option}")
    here = Path.cwd().resolve()
    real = directory.resolve()
    if real == here or real in here.parents:
        raise UserError(
            f"{option} {directory} is the working directory or a folder above it; --force "
            f"never replaces that: choose a new folder, e.g. {option} build/NAME"
        )
    entries = sorted(os.listdir(directory))
    if not entries:
        return
    ours = _written_by_us(directory)
    if ours is None:
        shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
        raise UserError(
            f"{option} {directory} was not written by apprentice-hw (it holds {shown}); --force "
            f"replaces only builds and training runs: choose another {option}"
        )
    foreign = [name for name in entries if name not in ours and not _is_leftover(name)]
    if foreign:
        shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise UserError(
            f"{option} {directory} holds files apprentice-hw did not write ({shown}); move them "
            f"out first or choose another {option} (--force would delete them)"
        )


@contextmanager
def exclusive(out: Path, command: str = "build") -> Iterator[None]:
    """One apprentice-hw command writing ``out`` at a time (a build, a deploy into its report).

    The lock is a file next to ``out`` (``.NAME.lock``), so it also covers the staging
    directory of a build that has not yet been renamed into place.
    """
    out = Path(out).resolve()  # a build and a deploy through a symbolic link share the lock
    lock_path = out.parent / f".{out.name}.lock"
    while True:
        try:
            lock = lock_path.open("w")
        except OSError as exc:
            raise UserError(
                f"cannot create the lock file {lock_path} ({exc.strerror or exc}); this {command} "
                f"needs a writable folder around {out.name}"
            ) from exc
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            lock.close()
            raise UserError(
                f"another apprentice-hw command (a build or a deploy) is writing {out} right "
                f"now; wait for it to finish, then run this {command} again"
            ) from exc
        # The holder before us unlinks the file as it finishes: a lock on that unlinked file
        # would exclude nobody, so lock the file that is there now.
        if lock_path.exists() and os.stat(lock_path).st_ino == os.fstat(lock.fileno()).st_ino:
            break
        lock.close()
    try:
        yield
    finally:
        lock_path.unlink(missing_ok=True)
        lock.close()  # releases the lock
