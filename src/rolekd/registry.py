"""Name -> builder registries (models, KD methods, HARD augmentors): configs name things by string,
and a user's own code joins with a decorator. One implementation so every registry errors alike."""

from __future__ import annotations

from typing import Callable, Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """A mapping of names to builders; ``kind`` names what it holds in error messages."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def add(self, name: str, item: T) -> T:
        """Register ``item`` under ``name``; re-registering the same object is a no-op."""
        if self._items.get(name, item) is not item:
            raise ValueError(f"{self.kind} name {name!r} is already registered")
        self._items[name] = item
        return item

    def decorator(self, name: str | None = None) -> Callable[[T], T]:
        """``@registry.decorator("name")``; without a name, the object's ``__name__``."""

        def wrap(item: T) -> T:
            return self.add(name or getattr(item, "__name__"), item)

        return wrap

    def get(self, name: str, field: str | None = None) -> T:
        """The builder for ``name``; an unknown name is one line listing the known ones."""
        if name not in self._items:
            where = f"{field}: " if field else ""
            raise ValueError(f"{where}unknown {self.kind} {name!r}; expected one of: {', '.join(self.names())}")
        return self._items[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items
