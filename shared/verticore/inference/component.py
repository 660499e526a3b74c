"""The component contract every inference piece follows (Haystack / sentence-transformers style).

* ``__init__`` stores JSON-serialisable settings (and, for artifact readers, reads the small JSON
  files that describe the artifact so a wrong path fails at once); it never loads weights.
* :meth:`Component.warm_up` loads the heavy state (tokenizer, weights, sessions); it is idempotent
  and called on first use, so ``Embedder().encode(...)`` works without it.
* :meth:`Component.to_dict` / :meth:`Component.from_dict` round-trip the settings as
  ``{"type": <registered name>, "init_parameters": {...}}``; a setting that is itself a component
  (an ensemble's shared embedder) nests as its own dict.
* :meth:`Component.save` / :meth:`Component.load` write and read that dict as ``component.json``
  in a directory. ``load`` on a directory without ``component.json`` opens it as the component's
  artifact with default settings (``TextClassifier.load(artifact_dir)``).

Classes register under a name in :data:`COMPONENTS` (entry-point group ``verticore.components``),
so ``from_dict`` rebuilds from a name, never by importing a module named in a file.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, ClassVar, TypeVar

from ..errors import ArtifactError, DataError, VerticoreError
from ..io import atomic_write_json, read_json
from ..registries import Registry

COMPONENT_FILE = "component.json"

#: Component classes by name (the ``type`` of :meth:`Component.to_dict`).
COMPONENTS: Registry[type] = Registry("component", "verticore.components")

C = TypeVar("C", bound="Component")


def register_component(name: str) -> Callable[[type[C]], type[C]]:
    """Class decorator: register a :class:`Component` subclass under ``name`` (its ``type``)."""
    def wrap(cls: type[C]) -> type[C]:
        cls.component_name = name
        return COMPONENTS.register(name, cls)
    return wrap


class Component:
    """Base of every inference component; subclasses implement :meth:`_init_parameters`."""

    component_name: ClassVar[str] = ""

    def _init_parameters(self) -> dict[str, Any]:
        """The keyword arguments that rebuild this instance (JSON values or components)."""
        raise NotImplementedError

    def warm_up(self) -> None:
        """Load heavy state (idempotent). Components with nothing heavy keep this no-op."""

    # -- settings as data ---------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """``{"type": name, "init_parameters": {...}}``, JSON-serialisable."""
        params = {k: _to_data(v, f"{type(self).__name__}.{k}") for k, v in self._init_parameters().items()}
        return {"type": self.component_name or type(self).__name__, "init_parameters": params}

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any], **overrides: Any) -> C:
        """Rebuild a component from :meth:`to_dict` output; ``overrides`` replace stored settings.

        Called on a subclass it refuses a dict of another component type; called on
        :class:`Component` it builds whichever registered type the dict names.
        """
        if not isinstance(data, dict) or not isinstance(data.get("type"), str):
            raise DataError("a component dict needs a 'type' string and an 'init_parameters' object")
        params = data.get("init_parameters") or {}
        if not isinstance(params, dict):
            raise DataError(f"component {data['type']!r}: 'init_parameters' must be an object")
        target = COMPONENTS.get(data["type"])
        if not (isinstance(target, type) and issubclass(target, cls)):
            raise DataError(f"component dict describes a {data['type']!r}, not a {cls.component_name or cls.__name__}")
        kwargs = {k: _from_data(v) for k, v in params.items()}
        kwargs.update(overrides)
        return target(**kwargs)

    # -- settings on disk ---------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """Write :meth:`to_dict` to ``directory/component.json`` (atomically); returns the file."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        return atomic_write_json(out / COMPONENT_FILE, self.to_dict())

    @classmethod
    def load(cls: type[C], directory: str | Path, **overrides: Any) -> C:
        """Open ``directory/component.json`` (see :meth:`save`); without one, ``directory`` is
        the component's own artifact, opened with default settings and ``overrides``."""
        path = Path(directory)
        f = path / COMPONENT_FILE
        if not f.exists():
            return cls(str(path), **overrides)
        try:
            data = read_json(f, "component config")
        except DataError as exc:
            raise ArtifactError(str(exc)) from None
        return cls.from_dict(data, **overrides)


def _to_data(value: Any, where: str) -> Any:
    if isinstance(value, Component):
        return value.to_dict()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_to_data(v, where) for v in value]
    if isinstance(value, dict):
        return {str(k): _to_data(v, where) for k, v in value.items()}
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        raise VerticoreError(f"setting {where} ({type(value).__name__}) is not JSON-serialisable; "
                             "pass a component or plain values") from None
    return value


def _from_data(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"type", "init_parameters"}:
        return Component.from_dict(value)
    return value


__all__ = ["COMPONENTS", "COMPONENT_FILE", "Component", "register_component"]
