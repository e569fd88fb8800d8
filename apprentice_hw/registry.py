"""A tiny named registry, the one mechanism behind datasets, models, quantizer presets and schemes.

Registries keep the code free of if-chains: a new dataset or model is a decorated function in its
own module, and the CLI, recipes and tests discover it by name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from apprentice_hw.errors import UserError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to entries; unknown names raise a :class:`UserError` listing the choices."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that adds an entry under ``name``."""

        def add(entry: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._entries[name] = entry
            return entry

        return add

    def add(self, name: str, entry: T) -> T:
        """Add ``entry`` under ``name`` (for entries that are values, not functions)."""
        return self.register(name)(entry)

    def get(self, name: str) -> T:
        if name not in self._entries:
            choices = ", ".join(sorted(self._entries))
            raise UserError(f"unknown {self.kind} {name!r}; choose one of: {choices}")
        return self._entries[name]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
