"""App plugins: how the core finds the installed apps without naming any of them.

An app registers an :class:`AppSpec` under the ``verticore.apps`` entry-point group in its
packaging metadata::

    [project.entry-points."verticore.apps"]
    my_app = "my_app.plugin:APP"          # an AppSpec, or a zero-argument callable returning one

and declares there everything the core needs::

    APP = AppSpec(
        name="my_app", title="My app", summary="What it does, in one sentence.", icon=":material/star:",
        pages=[DashboardPage("Overview", "dashboard/overview_page.py", icon=":material/dashboard:")],
        cli="my_app.cli:app",                        # a typer.Typer: `verticore my_app ...`
        api_prefix="my", create_router="my_app.api:create_router",  # `verticore serve`: /v1/my/...
        prepare_demo="my_app.demo:prepare_demo",     # prepare_demo(home, fast=..., show_progress=...)
        demo_ready="my_app.demo:is_ready",           # is_ready(home) -> bool
    )

Who reads it: the Streamlit hub (:mod:`verticore.dashboard`: one navigation section per app,
a card on the home page), ``python -m verticore.demo`` (prepares every app's demo state),
``verticore serve`` (mounts the routers) and the ``verticore`` command (``verticore apps``,
``verticore my_app ...``). Hooks may be given as objects or as ``"module:attribute"`` strings;
strings are imported only when used, so discovering the apps stays cheap, and
:meth:`AppSpec.describe` stays plain JSON.
"""
from __future__ import annotations

import importlib
import importlib.util
import logging
import re
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence, Union

from .errors import DataError

if TYPE_CHECKING:  # the serving layer imports FastAPI; plugins.py stays importable without it
    from fastapi import APIRouter

    from .inference import Embedder
    from .serving import MicroBatcher, ServingSettings

ENTRY_POINT_GROUP = "verticore.apps"
log = logging.getLogger("verticore.plugins")

#: A hook: the object itself, or a ``"package.module:attribute"`` reference imported on first use.
Hook = Union[str, Callable[..., Any]]


@dataclass
class ServingContext:
    """What an app's router factory gets from the server.

    ``home`` is the Verticore home (the app loads its state from ``home / <app>``);
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


@dataclass(frozen=True)
class DashboardPage:
    """One Streamlit page an app adds to the hub.

    ``path`` is the page script relative to the app's package folder (``"dashboard/page.py"``),
    so it is found wherever the package is installed; the hub runs it as a script, so it imports
    its helpers absolutely (``from my_app.dashboard.common import ...``). ``url_path`` defaults
    to ``<app>-<file stem>``; ``role`` is the least hub role (viewer, agent, admin) that sees the
    page in the navigation (None: everyone who may see the hub).
    """

    title: str
    path: str
    icon: str | None = None
    url_path: str | None = None
    role: str | None = None

    def __post_init__(self) -> None:
        if not str(self.title or "").strip():
            raise DataError(f"dashboard page {self.path!r}: a title is needed")
        p = Path(str(self.path or ""))
        if not str(self.path or "").endswith(".py") or p.is_absolute() or ".." in p.parts:
            raise DataError(f"dashboard page {self.title!r}: path {self.path!r} must be a .py file inside the app "
                            "package (relative, e.g. 'dashboard/page.py')")

    def to_dict(self) -> dict[str, Any]:
        return {"title": self.title, "path": self.path, "icon": self.icon, "url_path": self.url_path,
                "role": self.role}


def resolve_hook(hook: Hook, what: str = "hook") -> Any:
    """The object a hook names: ``hook`` itself, or the attribute a ``"module:attr.sub"`` string points at."""
    if not isinstance(hook, str):
        return hook
    module_name, sep, attr = hook.partition(":")
    if not sep or not module_name or not attr:
        raise DataError(f"{what} {hook!r}: expected 'package.module:attribute'")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def _hook_text(hook: Hook | None) -> str | None:
    if hook is None:
        return None
    if isinstance(hook, str):
        return hook
    return f"{getattr(hook, '__module__', '?')}:{getattr(hook, '__qualname__', type(hook).__name__)}"


@dataclass
class AppSpec:
    """One installed app, as the hub, the demo, ``verticore serve`` and the ``verticore`` command see it.

    Everything but the hooks is plain data (:meth:`describe`). Hooks (objects or
    ``"module:attribute"`` strings):

    * ``cli``: a ``typer.Typer`` (or a zero-argument function returning one), mounted as ``verticore <name>``;
    * ``create_router(ctx: ServingContext) -> fastapi.APIRouter``: mounted by ``verticore serve`` under
      ``/v1/<api_prefix>``;
    * ``prepare_demo(home: Path, *, fast: bool, show_progress: bool) -> None``: writes the app's demo
      state under ``home / <name>``; idempotent (``python -m verticore.demo`` calls it on every start);
    * ``demo_ready(home: Path) -> bool``: whether that state is there (default: ``home / <name>`` is not empty);
    * ``models``: ``{model name: hook}`` of the models ``verticore retrain`` retrains, each an object (or a
      zero-argument class/factory) implementing :class:`verticore.registry.loop.RetrainableModel`.
    """

    name: str                                  # "my_app": a Python identifier
    title: str                                 # "My app"
    summary: str = ""                          # one sentence for the hub's home page
    icon: str | None = None                    # a Streamlit icon, e.g. ":material/star:"
    package: str | None = None                 # the import package holding the pages (default: name)
    pages: Sequence[DashboardPage] = ()
    cli: Hook | None = None
    api_prefix: str | None = None              # "my" -> mounted at /v1/my
    create_router: "Hook | Callable[[ServingContext], APIRouter] | None" = None
    prepare_demo: Hook | None = None
    demo_ready: Hook | None = None
    models: "dict[str, Hook]" = field(default_factory=dict)  # retrainable models (verticore retrain)

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", self.name or ""):
            raise DataError(f"invalid app name {self.name!r}: use a Python identifier")
        if not str(self.title or "").strip():
            raise DataError(f"app {self.name}: a title is needed")
        self.package = self.package or self.name
        if self.api_prefix is not None:
            self.api_prefix = self.api_prefix.strip("/")
            if not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", self.api_prefix):
                raise DataError(f"app {self.name}: invalid api_prefix {self.api_prefix!r} "
                                "(lowercase letters, digits, - _)")
        if isinstance(self.pages, (str, bytes)) or not isinstance(self.pages, (list, tuple)):
            raise DataError(f"app {self.name}: pages must be a list of DashboardPage")
        bad = [p for p in self.pages if not isinstance(p, DashboardPage)]
        if bad:
            raise DataError(f"app {self.name}: pages must be DashboardPage objects, got {type(bad[0]).__name__}")
        self.pages = tuple(self.pages)
        if not isinstance(self.models, dict) or any(not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", str(k))
                                                    for k in self.models):
            raise DataError(f"app {self.name}: models must be a dict of model name -> hook (names: letters, digits, "
                            "_ . -)")

    # -- data ---------------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """Plain-JSON description (hooks as ``module:attribute`` text)."""
        return {"name": self.name, "title": self.title, "summary": self.summary, "icon": self.icon,
                "package": self.package, "pages": [p.to_dict() for p in self.pages], "cli": _hook_text(self.cli),
                "api_prefix": self.api_prefix, "create_router": _hook_text(self.create_router),
                "prepare_demo": _hook_text(self.prepare_demo), "demo_ready": _hook_text(self.demo_ready),
                "models": {k: _hook_text(v) for k, v in self.models.items()}}

    def package_dir(self) -> Path | None:
        """The folder of the app's installed package (found without importing it), or None."""
        try:
            spec = importlib.util.find_spec(str(self.package))
        except (ImportError, ValueError):
            return None
        if spec is None:
            return None
        locations = list(spec.submodule_search_locations or [])
        if locations:
            return Path(locations[0]).resolve()
        return Path(spec.origin).resolve().parent if spec.origin else None

    def page_file(self, page: DashboardPage) -> Path | None:
        """Absolute path of a page script, or None when the package is not installed."""
        base = self.package_dir()
        return None if base is None else base / page.path

    # -- hooks --------------------------------------------------------------------------------
    def router_factory(self) -> "Callable[[ServingContext], APIRouter] | None":
        """The ``create_router`` hook as a function, or None."""
        if self.create_router is None:
            return None
        return resolve_hook(self.create_router, f"app {self.name}: create_router")

    def load_cli(self) -> Any:
        """The app's command line as a typer/click command (raises :class:`DataError` when it has none)."""
        if self.cli is None:
            raise DataError(f"app {self.name} has no command line")
        import typer

        obj = resolve_hook(self.cli, f"app {self.name}: cli")
        if not isinstance(obj, typer.Typer) and not hasattr(obj, "main") and callable(obj):
            obj = obj()  # a factory
        if isinstance(obj, typer.Typer):
            obj = typer.main.get_command(obj)
        if not hasattr(obj, "make_context"):
            raise DataError(f"app {self.name}: cli is a {type(obj).__name__}, not a typer.Typer or click command")
        return obj

    def run_prepare_demo(self, home: Path, *, fast: bool = False, show_progress: bool = True) -> bool:
        """Prepare the demo state under ``home``; False when the app has no demo to prepare."""
        if self.prepare_demo is None:
            return False
        resolve_hook(self.prepare_demo, f"app {self.name}: prepare_demo")(Path(home), fast=fast,
                                                                           show_progress=show_progress)
        return True

    def is_demo_ready(self, home: Path) -> bool:
        """The app's ``demo_ready`` hook, else: ``home / <name>`` holds something. Never raises."""
        if self.demo_ready is not None:
            try:
                return bool(resolve_hook(self.demo_ready, f"app {self.name}: demo_ready")(Path(home)))
            except Exception as exc:  # a broken check reads as "not ready", with the reason in the log
                log.warning("app %s: demo_ready failed (%s)", self.name, _one_line(exc))
                return False
        d = Path(home) / self.name
        try:
            return d.is_dir() and any(not p.name.startswith(".") for p in d.iterdir())
        except OSError:
            return False


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"[:300]


def _load(ep: Any) -> AppSpec:
    obj = ep.load()
    if not isinstance(obj, AppSpec) and callable(obj):
        obj = obj()
    if not isinstance(obj, AppSpec):
        raise DataError(f"entry point {ep.name} = {ep.value} gives {type(obj).__name__}, not an AppSpec")
    return obj


def discover_apps(on_error: Callable[[str, str], None] | None = None) -> dict[str, AppSpec]:
    """Every app registered under the ``verticore.apps`` entry-point group, by name (sorted).

    An entry point that fails to load is reported through ``on_error(name, one_line_reason)``
    (default: a warning in the log) and left out; two different apps with one name, or two
    apps with one ``api_prefix``, raise :class:`DataError`.
    """
    found: dict[str, AppSpec] = {}
    origin: dict[str, str] = {}
    seen: set[tuple[str, str]] = set()
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: (e.name, e.value)):
        if (ep.name, ep.value) in seen:  # the same distribution visible twice on sys.path
            continue
        seen.add((ep.name, ep.value))
        try:
            spec = _load(ep)
        except Exception as exc:  # a broken app must not take the others down
            (on_error or (lambda n, r: log.warning("app %s not loaded (%s)", n, r)))(ep.name, _one_line(exc))
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


__all__ = ["ENTRY_POINT_GROUP", "AppSpec", "DashboardPage", "Hook", "ServingContext", "discover_apps", "resolve_hook"]
