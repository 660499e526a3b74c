"""Hot model swaps: a handle that follows a registry alias without restarting the process."""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Generic, TypeVar

from ..errors import ArtifactError, DataError

if TYPE_CHECKING:
    from .store import ModelRegistry, ModelVersion

log = logging.getLogger(__name__)
T = TypeVar("T")


class ModelHandle(Generic[T]):
    """The loaded model an alias points at, reloaded when the alias moves.

    ``get()`` costs one ``stat`` of ``aliases.json`` at most every ``interval`` seconds; when the
    file changed and the alias points elsewhere, the new version is loaded *before* the reference
    is swapped (one assignment), so callers that already hold the old object finish with it and a
    failed load keeps serving the old model (see :attr:`last_error`).
    """

    def __init__(self, registry: "ModelRegistry", app: str, model: str, loader: Callable[[Path], T],
                 alias: str = "production", interval: float = 2.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.registry, self.app, self.model, self.alias = registry, app, model, alias
        self.loader, self.interval, self._clock = loader, float(interval), clock
        self._aliases_file = registry.model_dir(app, model) / "aliases.json"
        self._current: tuple["ModelVersion", T] | None = None
        self._stamp: tuple[int, int, int] | None = None
        self._next_check = 0.0
        self._reload_lock = threading.Lock()
        self.last_error: str | None = None
        self.reloads = 0

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = self._aliases_file.stat()
        except FileNotFoundError:
            return None
        return st.st_ino, st.st_mtime_ns, st.st_size

    def refresh(self, force: bool = False) -> bool:
        """Reload if the alias moved (``force``: re-read the alias now). True when a new version was loaded."""
        if not self._reload_lock.acquire(blocking=self._current is None):
            return False  # another thread is reloading; keep serving the current model meanwhile
        try:
            self._next_check = self._clock() + self.interval
            stamp = self._stat()
            if not force and self._current is not None and stamp == self._stamp:
                return False
            try:
                version = self.registry.get(self.app, self.model, self.alias)
                if self._current is not None and self._current[0].version == version.version:
                    self._stamp, self.last_error = stamp, None
                    return False
                obj = self.loader(version.artifact_path)
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                if self._current is None:
                    if isinstance(exc, (DataError, ArtifactError)):
                        raise
                    raise ArtifactError(f"{self.app}/{self.model} {self.alias} does not load: {exc}") from None
                self._stamp = stamp  # retry only when the alias moves again (or on refresh(force=True))
                log.warning("keeping %s v%d: reloading %s/%s %s failed: %s", self.model, self._current[0].version,
                            self.app, self.model, self.alias, exc)
                return False
            self._current = (version, obj)  # one reference swap: in-flight callers keep the old object
            self._stamp = stamp
            self.last_error = None
            self.reloads += 1
            log.info("loaded %s (%s)", version.name, self.alias)
            return True
        finally:
            self._reload_lock.release()

    def get(self) -> T:
        """The current model object (checking the alias at most once per ``interval``)."""
        if self._current is None or self._clock() >= self._next_check:
            self.refresh()
        current = self._current
        assert current is not None
        return current[1]

    @property
    def version(self) -> "ModelVersion":
        """The version whose object :meth:`get` returns."""
        if self._current is None:
            self.refresh()
        assert self._current is not None
        return self._current[0]

    def __repr__(self) -> str:
        v = self._current[0].version if self._current else None
        return f"ModelHandle({self.app}/{self.model}@{self.alias} -> v{v})"


__all__ = ["ModelHandle"]
