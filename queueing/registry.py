"""The one way an app hands something to another part of the platform: a named entry in a
`Registry`, registered from the app's `AppConfig.ready()`.

Housekeeping duties, dashboard panels, report sections, job argument describers, secrets for
redaction, alert senders, metric collectors and bot commands are all registries. The lower
layer defines the registry and reads it; the app above registers into it, so no import ever
runs back up (see the import-linter contracts in pyproject.toml)."""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, what: str):
        self.what = what
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T) -> T:
        """Add or replace `name` (ready() may run more than once in tests); returns the entry,
        so it can decorate a function."""
        self._entries[name] = entry
        return entry

    @contextmanager
    def replaced(self, name: str, entry: T) -> Iterator[T]:
        """`name` is `entry` inside the block, and what it was before afterwards (or gone):
        a test's stand-in for one entry."""
        missing = object()
        before = self._entries.get(name, missing)
        self._entries[name] = entry
        try:
            yield entry
        finally:
            if before is missing:
                del self._entries[name]
            else:
                self._entries[name] = before

    def __getitem__(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise KeyError(f"no {self.what} named {name!r}; registered: {', '.join(self._entries) or 'none'}") from None

    def get(self, name: str, default: T | None = None) -> T | None:
        return self._entries.get(name, default)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def items(self) -> list[tuple[str, T]]:
        return list(self._entries.items())

    def values(self) -> list[T]:
        return list(self._entries.values())
