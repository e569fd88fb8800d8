"""Progress output: numbered steps and progress bars on stderr, all silenced by ``--quiet``.

Results go to stdout and files; progress goes to stderr so a user can pipe the one and still see
the other.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")


class Progress:
    """Prints ``[i/n] step ...`` lines and tqdm bars unless ``quiet``."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet

    def message(self, text: str) -> None:
        if not self.quiet:
            print(text, file=sys.stderr, flush=True)

    @contextlib.contextmanager
    def step(self, index: int, total: int, title: str) -> Iterator[None]:
        """Announce a step, then its wall time when it finishes."""
        self.message(f"[{index}/{total}] {title} ...")
        start = time.perf_counter()
        yield
        self.message(f"[{index}/{total}] {title}: done in {time.perf_counter() - start:.1f} s")

    def bar(self, items: Iterable[T], desc: str, total: int | None = None) -> Iterable[T]:
        """Wrap ``items`` in a progress bar (or return them as they are when quiet)."""
        if self.quiet:
            return items
        # disable=None: bars only on a terminal; logs get the per-epoch summary lines instead.
        return tqdm(
            items, desc=desc, total=total, leave=False, file=sys.stderr, dynamic_ncols=True,
            disable=None,
        )  # fmt: skip
