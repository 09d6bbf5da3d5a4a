"""Enum-keyed registries (RobustBench style): a name maps to a factory, never to `eval`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from enum import StrEnum
from typing import Generic, TypeVar

K = TypeVar("K", bound=StrEnum)
V = TypeVar("V")


class Registry(Generic[K, V]):
    """A mapping from the members of one enum to factories, filled by a decorator.

    Registering a key twice is an error (two modules claiming a name is a bug, not an override).
    """

    def __init__(self, what: str, keys: type[K]) -> None:
        self.what = what
        self.keys = keys
        self._entries: dict[K, V] = {}

    def register(self, key: K | str) -> Callable[[V], V]:
        member = self.keys(key)

        def add(value: V) -> V:
            if member in self._entries:
                raise ValueError(f"{self.what} {member.value!r} is registered twice")
            self._entries[member] = value
            return value

        return add

    def __getitem__(self, key: K | str) -> V:
        try:
            return self._entries[self.keys(key)]
        except (ValueError, KeyError):
            known = ", ".join(sorted(m.value for m in self._entries))
            raise KeyError(f"unknown {self.what} {key!r}: use one of {known}") from None

    def __contains__(self, key: object) -> bool:
        try:
            return self.keys(key) in self._entries  # type: ignore[arg-type]
        except ValueError:
            return False

    def __iter__(self) -> Iterator[K]:
        return iter(sorted(self._entries, key=lambda m: list(self.keys).index(m)))

    def __len__(self) -> int:
        return len(self._entries)

    def missing(self) -> list[K]:
        """Enum members with no entry (a test asserts this is empty)."""
        return [m for m in self.keys if m not in self._entries]
