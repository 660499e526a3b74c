"""App plugins: how ``verticore serve`` finds the installed apps without naming any of them.

An app registers an :class:`AppSpec` under the ``verticore.apps`` entry-point group in its
packaging metadata::

    [project.entry-points."verticore.apps"]
    my_app = "my_app.plugin:SPEC"          # an AppSpec, or a zero-argument callable returning one

and ``verticore serve`` mounts ``spec.create_router(ctx)`` under ``/v1/<api_prefix>``.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from .errors import DataError

if TYPE_CHECKING:  # the serving layer imports FastAPI; plugins.py stays importable without it
    from fastapi import APIRouter

    from .inference import Embedder
    from .serving import MicroBatcher, ServingSettings

ENTRY_POINT_GROUP = "verticore.apps"
log = logging.getLogger("verticore.plugins")


@dataclass
class ServingContext:
    """What an app's router factory gets from the server.

    ``home`` is ``$VERTICORE_HOME`` (the app loads its state from ``home / <app>``);
    ``embedder()`` / ``classifier()`` load the server's shared models on first use (``None``
    when the server has none); ``embedder_batcher`` micro-batches ``Embedder.encode`` across
    every request of every app (``await ctx.embedder_batcher.submit(texts)`` -> rows).
    """

    home: Path
    settings: "ServingSettings"
    embedder_loader: Callable[[], "Embedder | None"] = lambda: None
    classifier_loader: Callable[[], Any] = lambda: None
    embedder_batcher: "MicroBatcher | None" = None
    extras: dict[str, Any] = field(default_factory=dict)

    def embedder(self) -> "Embedder | None":
        return self.embedder_loader()

    def classifier(self) -> Any:
        return self.classifier_loader()


@dataclass
class AppSpec:
    """One installed app, as ``verticore serve`` (and later the hub and CLI) see it."""

    name: str                                  # "customer_service"
    title: str                                 # "Customer service"
    api_prefix: str | None = None              # "support" -> mounted at /v1/support
    create_router: "Callable[[ServingContext], APIRouter] | None" = None

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", self.name or ""):
            raise DataError(f"invalid app name {self.name!r}: use a Python identifier")
        if self.api_prefix is not None:
            self.api_prefix = self.api_prefix.strip("/")
            if not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", self.api_prefix):
                raise DataError(f"app {self.name}: invalid api_prefix {self.api_prefix!r} (lowercase letters, digits, - _)")


def _load(ep: Any) -> AppSpec:
    obj = ep.load()
    if not isinstance(obj, AppSpec) and callable(obj):
        obj = obj()
    if not isinstance(obj, AppSpec):
        raise DataError(f"entry point {ep.name} = {ep.value} gives {type(obj).__name__}, not an AppSpec")
    return obj


def discover_apps(on_error: Callable[[str, str], None] | None = None) -> dict[str, AppSpec]:
    """Every app registered under the ``verticore.apps`` entry-point group, by name.

    An entry point that fails to load is reported through ``on_error(name, one_line_reason)``
    (default: a warning in the log) and left out; two different apps with one name, or two
    apps with one ``api_prefix``, raise :class:`DataError`.
    """
    found: dict[str, AppSpec] = {}
    origin: dict[str, str] = {}
    seen: set[tuple[str, str]] = set()
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if (ep.name, ep.value) in seen:  # the same distribution visible twice on sys.path
            continue
        seen.add((ep.name, ep.value))
        try:
            spec = _load(ep)
        except Exception as exc:  # a broken app must not take the others down
            reason = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"[:300]
            (on_error or (lambda n, r: log.warning("app %s not loaded (%s)", n, r)))(ep.name, reason)
            continue
        if spec.name in found:
            raise DataError(f"two apps are named {spec.name!r}: {origin[spec.name]} and {ep.value}; "
                            "uninstall one of them")
        found[spec.name] = spec
        origin[spec.name] = ep.value
    prefixes: dict[str, str] = {}
    for spec in found.values():
        if spec.api_prefix:
            if spec.api_prefix in prefixes:
                raise DataError(f"apps {prefixes[spec.api_prefix]!r} and {spec.name!r} both use the API prefix "
                                f"/v1/{spec.api_prefix}")
            prefixes[spec.api_prefix] = spec.name
    return found


__all__ = ["ENTRY_POINT_GROUP", "AppSpec", "ServingContext", "discover_apps"]
