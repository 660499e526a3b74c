"""The retrieval component contract: settings, hits, the retriever registry.

Every retrieval component keeps only JSON-serialisable settings in ``__init__``; heavy state
(an embedding model, a BM25 matrix) is built by :meth:`RetrievalComponent.warm_up` or on first
use. ``to_dict()``/``from_dict()`` round-trip the settings, ``save(dir)``/``load(dir)`` write and
read them as ``component.json``. Retriever kinds are registered in :data:`retrievers` (entry-point
group ``verticore.retrievers``), so a plugin adds a kind without editing the core.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Mapping, NamedTuple, Protocol, Sequence, runtime_checkable

from ..errors import DataError
from ..evaluation import check_k  # noqa: F401  (re-exported for the retrievers)
from ..io import atomic_write_json, read_json
from ..registries import Registry

#: Retriever kinds by name (``bm25``, ``dense``, ``hybrid`` built in; plugins via ``verticore.retrievers``).
retrievers: Registry[type] = Registry("retriever", group="verticore.retrievers")
#: Fusion kinds by name (``rrf``, ``convex``; plugins via ``verticore.fusions``).
fusions: Registry[type] = Registry("fusion", group="verticore.fusions")

CONFIG_FILE = "component.json"


class RetrievalHit(NamedTuple):
    """One retrieved key with its score (higher is better; the scale depends on the retriever)."""

    key: str
    score: float


@runtime_checkable
class Retriever(Protocol):
    """What every retriever offers: keyed texts in, ranked :class:`RetrievalHit` lists out."""

    def add(self, keys: Sequence[str], texts: Sequence[str]) -> None: ...

    def delete(self, keys: Sequence[str]) -> int: ...

    def search(self, query: str, k: int = 10, allow: Any = None) -> list[RetrievalHit]: ...

    def search_many(self, queries: Sequence[str], k: int = 10, allow: Any = None,
                    exclude: Sequence[str | None] | None = None) -> list[list[RetrievalHit]]: ...


class RetrievalComponent:
    """Settings round-trip shared by retrievers, fusions and the calibrator.

    Subclasses set ``kind`` (their registry name) and return their init settings from
    :meth:`settings`; ``from_dict`` passes them back to ``__init__``.
    """

    kind: ClassVar[str] = ""

    def settings(self) -> dict[str, Any]:
        """JSON-serialisable init arguments."""
        raise NotImplementedError

    def warm_up(self) -> None:
        """Build heavy state now rather than on first use (no-op by default)."""

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.kind, "settings": self.settings()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "RetrievalComponent":
        """Rebuild a component from :meth:`to_dict` output (dispatching on ``type`` when called on the base)."""
        if not isinstance(data, Mapping) or "type" not in data:
            raise DataError(f"not a retrieval component config: {data!r}")
        target = cls
        if data["type"] != cls.kind:
            registry = fusions if data["type"] in fusions else retrievers
            target = registry.get(str(data["type"]))
            if not (isinstance(target, type) and issubclass(target, cls)):
                raise DataError(f"{data['type']!r} is not a {cls.__name__}")
        return target(**dict(data.get("settings") or {}))

    def save(self, directory: str | Path) -> Path:
        """Write this component's config to ``directory/component.json``."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        atomic_write_json(d / CONFIG_FILE, self.to_dict())
        return d

    @classmethod
    def load(cls, directory: str | Path) -> "RetrievalComponent":
        """Rebuild the component whose config :meth:`save` wrote."""
        path = Path(directory) / CONFIG_FILE
        if not path.exists():
            raise DataError(f"no retrieval component config in {directory} ({CONFIG_FILE} missing)")
        return cls.from_dict(read_json(path, "retrieval component config"))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.settings().items())
        return f"{type(self).__name__}({args})"


__all__ = ["RetrievalHit", "Retriever", "RetrievalComponent", "retrievers", "fusions", "check_k"]
