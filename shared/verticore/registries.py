"""One generic name -> object registry for everything that plugs into the core.

Inference backends, ensemble member kinds, fine-tuning methods and retrievers each keep one
:class:`Registry`. Built-in entries register themselves at import time; third-party entries
arrive through an entry-point group (``verticore.backends``, ``verticore.finetune_methods``,
...) declared in the plugin's own packaging metadata, so adding one never edits the core::

    [project.entry-points."verticore.finetune_methods"]
    my_method = "my_pkg.my_method"      # importing the module registers it

A duplicate name is refused: two plugins silently shadowing each other is worse than an error.
"""
from __future__ import annotations

import logging
import threading
from importlib.metadata import entry_points
from typing import Callable, Generic, Iterator, TypeVar

from .errors import VerticoreError

T = TypeVar("T")
log = logging.getLogger("verticore.registries")


class Registry(Generic[T]):
    """Named entries of one kind, extended through an entry-point group.

    ``kind`` names the entries in error messages ("backend", "fine-tuning method");
    ``group`` is the entry-point group scanned once, on first lookup. An entry point may
    point at a module (importing it registers its entries) or at an object, which is then
    registered under the entry point's name.
    """

    def __init__(self, kind: str, group: str | None = None) -> None:
        self.kind = kind
        self.group = group
        self._entries: dict[str, T] = {}
        self._origin: dict[str, str] = {}
        self._plugins_loaded = group is None
        self._lock = threading.RLock()

    def register(self, name: str, obj: T, *, origin: str | None = None) -> T:
        """Add ``obj`` under ``name``; a second, different entry with one name raises."""
        if not name or not isinstance(name, str):
            raise VerticoreError(f"{self.kind} name must be a non-empty string, got {name!r}")
        with self._lock:
            if name in self._entries and self._entries[name] is not obj:
                raise VerticoreError(
                    f"{self.kind} {name!r} is already registered (by {self._origin.get(name, '?')}); "
                    "choose another name")
            self._entries[name] = obj
            self._origin[name] = origin or getattr(obj, "__module__", None) or "?"
        return obj

    def decorator(self, name: str) -> Callable[[T], T]:
        """``@registry.decorator("name")`` registers the decorated object."""
        def wrap(obj: T) -> T:
            return self.register(name, obj)
        return wrap

    def unregister(self, name: str) -> None:
        """Remove ``name`` (tests and plugin reloads); unknown names are ignored."""
        with self._lock:
            self._entries.pop(name, None)
            self._origin.pop(name, None)

    def _load_plugins(self) -> None:
        if self._plugins_loaded:
            return
        with self._lock:
            if self._plugins_loaded:
                return
            self._plugins_loaded = True
            seen: set[tuple[str, str]] = set()
            for ep in entry_points(group=self.group or ""):
                if (ep.name, ep.value) in seen:
                    continue
                seen.add((ep.name, ep.value))
                try:
                    obj = ep.load()
                except Exception as exc:  # one broken plugin must not take the built-ins down
                    log.warning("%s plugin %s (%s) not loaded: %s", self.kind, ep.name, ep.value, exc)
                    continue
                if ep.name not in self._entries and not _is_module(obj):
                    self.register(ep.name, obj, origin=ep.value)

    def get(self, name: str) -> T:
        """The entry called ``name``; an unknown name raises with the list of choices."""
        self._load_plugins()
        try:
            return self._entries[name]
        except KeyError:
            raise VerticoreError(f"unknown {self.kind} {name!r}; choose one of {self.names()}") from None

    def names(self) -> list[str]:
        """Sorted names of every registered entry (built-in and plugin)."""
        self._load_plugins()
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        self._load_plugins()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {sorted(self._entries)})"


def _is_module(obj: object) -> bool:
    import types
    return isinstance(obj, types.ModuleType)


__all__ = ["Registry"]
