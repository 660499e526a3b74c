"""The Verticore Streamlit hub: demo-state location and the installed apps' pages.

Layout::

    hub.py         the entry script (``streamlit run .../hub.py``; ``make demo`` starts it)
    home_page.py   "Home": what Verticore is, the installed apps, whether their demo state is ready
    core_page.py   "Core: models": classify / embed a text with any model, device info
    usage_page.py  "Usage": API usage per key

The hub names no app: it lists what is registered under the ``verticore.apps`` entry-point group
(:func:`verticore.plugins.discover_apps`). Each app's :class:`~verticore.plugins.AppSpec` lists its
pages (``DashboardPage("Overview", "dashboard/overview_page.py")``, relative to the app package)
and keeps its demo state under ``home() / <app>``.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .. import plugins
from ..paths import HOME_ENV, app_home, home, repo_root
from ..plugins import AppSpec, DashboardPage

DASHBOARD_DIR = Path(__file__).resolve().parent
HUB_SCRIPT = DASHBOARD_DIR / "hub.py"
HOME_PAGE = DASHBOARD_DIR / "home_page.py"
CORE_PAGE = DASHBOARD_DIR / "core_page.py"
CORE_URL_PATH = "core"


@dataclass
class AppPages:
    """Pages an app contributes to the hub.

    ``error`` is a one-line reason when none could be used; ``broken`` tells a real problem (a
    plugin that fails to load, page files missing) from an app that simply has no pages.
    """

    app: AppSpec
    pages: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    installed: bool = True
    broken: bool = False
    warnings: list[str] = field(default_factory=list)


@dataclass
class HubApps:
    """What the hub shows: every installed app's pages, plus apps whose plugin failed to load."""

    apps: list[AppPages] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def page_url_path(app: str, page: DashboardPage | Mapping[str, Any]) -> str:
    """URL path of an app page in the hub: the page's ``url_path`` or ``<app>-<file stem>`` (dashes)."""
    data = page.to_dict() if isinstance(page, DashboardPage) else page
    explicit = data.get("url_path")
    if explicit:
        return str(explicit).strip("/")
    stem = Path(str(data["path"])).stem
    return re.sub(r"[^A-Za-z0-9-]+", "-", f"{app}-{stem}").strip("-").lower()


def _app_pages(spec: AppSpec) -> AppPages:
    entry = AppPages(spec)
    base = spec.package_dir()
    if base is None:
        entry.installed, entry.error = False, f"package {spec.package} is not installed"
        return entry
    for page in spec.pages:
        path = base / page.path
        if not path.is_file():
            entry.warnings.append(f"{spec.name}: page file not found: {path}")
            continue
        entry.pages.append({"title": page.title, "path": str(path), "icon": page.icon or None,
                            "url_path": page_url_path(spec.name, page), "role": page.role})
    if not entry.pages:
        entry.error = f"{spec.name} lists no usable pages" if spec.pages else f"{spec.name} has no dashboard pages"
        entry.broken = bool(entry.warnings)
    return entry


def hub_apps(apps: Mapping[str, AppSpec] | None = None) -> HubApps:
    """The installed apps (default: :func:`verticore.plugins.discover_apps`) with their page files.

    Never raises: a plugin that fails to load, a clash between apps or a missing page file become
    ``problems`` / ``warnings`` for the hub to show while the other apps keep working.
    """
    out = HubApps()
    if apps is None:
        try:
            apps = plugins.discover_apps(on_error=lambda name, why: out.problems.append(
                f"app {name} failed to load ({why})"))
        except Exception as exc:  # e.g. two apps with one name: show it, keep the core pages
            reason = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
            out.problems.append(f"apps not loaded: {reason}")
            apps = {}
    out.apps = [_app_pages(spec) for spec in apps.values()]
    return out


def discover_pages(apps: Mapping[str, AppSpec] | None = None) -> list[AppPages]:
    """Each installed app's pages (see :func:`hub_apps`, which also reports plugins that failed to load)."""
    return hub_apps(apps).apps


def installed_app(name: str) -> AppSpec | None:
    """The installed app called ``name``, or None (never raises)."""
    try:
        return plugins.discover_apps().get(name)
    except Exception:
        return None


def demo_ready(app: str | AppSpec, base: Path | None = None) -> bool:
    """True when the app's demo state is prepared under ``base`` (default :func:`home`).

    Asks the app's ``demo_ready`` hook; without one (or for a name no installed app has) checks
    that ``<home>/<app>`` holds something.
    """
    root = base or home()
    spec = app if isinstance(app, AppSpec) else installed_app(app)
    if spec is None:
        d = app_home(str(app), root)
        try:
            return d.is_dir() and any(not p.name.startswith(".") for p in d.iterdir())
        except OSError:
            return False
    return spec.is_demo_ready(root)


def core_demo_classifier(base: Path | None = None) -> Path:
    """Where ``make demo`` puts the core demo classifier."""
    return (base or home()) / "core" / "demo_classifier"


def find_artifacts(base: Path | None = None, max_depth: int = 4) -> dict[str, list[Path]]:
    """Model directories under ``home``: ``{"classifier": [...], "embedder": [...]}``.

    A classifier has ``labels.json``; an embedder is a sentence-transformers folder
    (``modules.json``) or an artifact whose ``verticore.json`` says ``kind: embedder``.
    Hidden dirs (staging dirs of a running training) are skipped.
    """
    root = base or home()
    out: dict[str, list[Path]] = {"classifier": [], "embedder": []}
    if not root.is_dir():
        return out

    def walk(d: Path, depth: int) -> None:
        try:
            children = sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))
        except OSError:
            return
        for child in children:
            has_config = (child / "config.json").is_file()
            kind = None
            if has_config and (child / "labels.json").is_file():
                kind = "classifier"
            elif (child / "modules.json").is_file():
                kind = "embedder"
            elif has_config and (child / "verticore.json").is_file():
                try:
                    kind = json.loads((child / "verticore.json").read_text(encoding="utf-8")).get("kind")
                except (OSError, ValueError):
                    kind = None
            if kind in out:
                out[kind].append(child)
            elif depth < max_depth:
                walk(child, depth + 1)

    walk(root, 1)
    return out


__all__ = ["AppPages", "CORE_PAGE", "CORE_URL_PATH", "HOME_ENV", "HOME_PAGE", "HUB_SCRIPT", "HubApps", "app_home",
           "core_demo_classifier", "demo_ready", "discover_pages", "find_artifacts", "home", "hub_apps",
           "installed_app", "page_url_path", "repo_root"]
