"""The Verticore Streamlit hub: demo-state location and discovery of the apps' pages.

Layout::

    hub.py         the entry script (``streamlit run .../hub.py``; ``make demo`` starts it)
    home_page.py   "Home": what Verticore is, the three apps, whether their demo state is ready
    core_page.py   "Core: models": classify / embed a text with any model, device info

Each app contributes pages through ``<app>/dashboard/__init__.py``::

    PAGES = [{"title": "Monitor", "path": str(Path(__file__).parent / "monitor.py"),
              "icon": ":material/monitoring:"}]            # optional: "url_path": "..."

and keeps its demo state under ``home() / <app>`` (written by ``<app>.demo.prepare_demo``).
"""
from __future__ import annotations

import importlib
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

DASHBOARD_DIR = Path(__file__).resolve().parent
HUB_SCRIPT = DASHBOARD_DIR / "hub.py"
HOME_PAGE = DASHBOARD_DIR / "home_page.py"
CORE_PAGE = DASHBOARD_DIR / "core_page.py"
CORE_URL_PATH = "core"
HOME_ENV = "VERTICORE_HOME"


@dataclass(frozen=True)
class AppInfo:
    """One vertical app of the monorepo."""

    package: str
    title: str
    summary: str
    icon: str


APPS: tuple[AppInfo, ...] = (
    AppInfo("customer_service", "Customer service",
            "Answers customer questions from a knowledge base with sources, detects intent, hands off to humans.",
            ":material/support_agent:"),
    AppInfo("finance_sentiment", "Finance sentiment",
            "Classifies the sentiment of financial news, tracks trends per company and alerts on surges.",
            ":material/monitoring:"),
    AppInfo("recommender", "Recommender",
            "Recommends items from what they say and what users did, served from a FAISS index.",
            ":material/recommend:"),
)


def _is_verticore_root(path: Path) -> bool:
    pyproject = path / "pyproject.toml"
    if not pyproject.is_file():
        return False
    try:
        text = pyproject.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return re.search(r'^\s*name\s*=\s*"verticore"', text, flags=re.MULTILINE) is not None


def repo_root() -> Path | None:
    """The Verticore source checkout (the dir holding its pyproject.toml), or None when installed.

    Looks upward from this file first (editable install / source tree), then from the cwd.
    """
    for start in (DASHBOARD_DIR, Path.cwd().resolve()):
        for candidate in (start, *start.parents):
            if _is_verticore_root(candidate):
                return candidate
    return None


def home() -> Path:
    """Where demo state lives: ``$VERTICORE_HOME``, else ``<repo>/.verticore``, else ``~/.verticore``."""
    from ..settings import get_settings

    env = get_settings().home
    if env is not None:
        return env
    root = repo_root()
    return (root / ".verticore") if root is not None else Path.home() / ".verticore"


def ensure_source_paths() -> None:
    """Make ``verticore`` and the apps importable when running from a source checkout (no install)."""
    root = repo_root()
    if root is None:
        return
    for sub in ("apps", "shared"):
        p = str(root / sub)
        if (root / sub).is_dir() and p not in sys.path:
            sys.path.insert(0, p)


@dataclass
class AppPages:
    """Pages an app contributes to the hub.

    ``error`` is a one-line reason when none could be read; ``broken`` tells a real problem (a
    module that fails to import, a malformed ``PAGES``) from an app that simply has no pages yet.
    """

    app: AppInfo
    pages: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    installed: bool = True
    broken: bool = False
    warnings: list[str] = field(default_factory=list)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    line = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {line[:200]}" if line else type(exc).__name__


def page_url_path(app: str, page: dict[str, Any]) -> str:
    """URL path of an app page in the hub: ``page["url_path"]`` or ``<app>-<file stem>`` (dashes)."""
    explicit = page.get("url_path")
    if explicit:
        return str(explicit).strip("/")
    stem = Path(str(page["path"])).stem
    return re.sub(r"[^A-Za-z0-9-]+", "-", f"{app}-{stem}").strip("-").lower()


def _module_missing(exc: ModuleNotFoundError, *names: str) -> bool:
    missing = getattr(exc, "name", None) or ""
    return any(missing == n or n.startswith(missing + ".") for n in names if missing)


def discover_pages(apps: Sequence[AppInfo] | None = None) -> list[AppPages]:
    """Import ``<app>.dashboard`` for every app (default: :data:`APPS`) and read its ``PAGES``.

    Never raises: an app that is not installed is marked ``installed=False``; a broken module,
    a malformed ``PAGES`` or a missing page file becomes ``error`` / ``warnings`` for the hub
    to show while the other apps keep working.
    """
    ensure_source_paths()
    found: list[AppPages] = []
    for app in APPS if apps is None else apps:
        entry = AppPages(app)
        found.append(entry)
        try:
            importlib.import_module(app.package)
        except ModuleNotFoundError as exc:
            if _module_missing(exc, app.package):
                entry.installed = False
                entry.error = f"{app.package} is not installed"
            else:
                entry.error, entry.broken = f"{app.package} failed to import ({_first_line(exc)})", True
            continue
        except Exception as exc:  # a broken app must not break the hub
            entry.error, entry.broken = f"{app.package} failed to import ({_first_line(exc)})", True
            continue
        try:
            module = importlib.import_module(f"{app.package}.dashboard")
        except ModuleNotFoundError as exc:
            if _module_missing(exc, f"{app.package}.dashboard"):
                entry.error = f"{app.package} has no dashboard pages yet"
            else:
                entry.error, entry.broken = f"{app.package}.dashboard failed to import ({_first_line(exc)})", True
            continue
        except Exception as exc:
            entry.error, entry.broken = f"{app.package}.dashboard failed to import ({_first_line(exc)})", True
            continue
        pages = getattr(module, "PAGES", None)
        if pages is None and getattr(module, "__file__", None) is None:
            entry.error = f"{app.package} has no dashboard pages yet"  # a bare folder (namespace package)
            continue
        if not isinstance(pages, (list, tuple)):
            entry.error, entry.broken = f"{app.package}.dashboard defines no PAGES list", True
            continue
        for i, page in enumerate(pages):
            if not isinstance(page, dict) or not page.get("path") or not page.get("title"):
                entry.warnings.append(f"{app.package}.dashboard.PAGES[{i}] needs 'title' and 'path'")
                continue
            path = Path(str(page["path"]))
            if not path.is_file():
                entry.warnings.append(f"{app.package}: page file not found: {path}")
                continue
            item = {"title": str(page["title"]), "path": str(path.resolve()),
                    "icon": page.get("icon") or None}
            item["url_path"] = page_url_path(app.package, {**page, "path": str(path)})
            entry.pages.append(item)
        if not entry.pages and entry.error is None:
            entry.error = f"{app.package}.dashboard lists no usable pages"
            entry.broken = bool(entry.warnings)
    return found


def demo_ready(app: str, base: Path | None = None) -> bool:
    """True when the app's demo state is prepared under ``home``.

    Asks ``<app>.demo.is_ready(home)`` when the app defines it; otherwise checks that
    ``<home>/<app>`` holds something (written by ``<app>.demo.prepare_demo``).
    """
    root = base or home()
    try:
        hook = getattr(importlib.import_module(f"{app}.demo"), "is_ready", None)
    except Exception:  # no demo module, or a broken one: fall back to the folder check
        hook = None
    if callable(hook):
        try:
            return bool(hook(root))
        except Exception:
            return False
    d = root / app
    try:
        return d.is_dir() and any(not p.name.startswith(".") for p in d.iterdir())
    except OSError:
        return False


def core_demo_classifier(base: Path | None = None) -> Path:
    """Where ``make demo`` puts the core demo classifier."""
    return (base or home()) / "core" / "demo_classifier"


def find_artifacts(base: Path | None = None, max_depth: int = 4) -> dict[str, list[Path]]:
    """Model directories under ``home``: ``{"classifier": [...], "embedder": [...]}``.

    A classifier has ``labels.json``; an embedder is a sentence-transformers folder
    (``modules.json``) or an artifact whose ``verticore.json`` says ``kind: embedder``.
    Hidden dirs (staging dirs of a running training) are skipped.
    """
    import json

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


__all__ = ["APPS", "AppInfo", "AppPages", "CORE_PAGE", "CORE_URL_PATH", "HOME_PAGE", "HUB_SCRIPT", "core_demo_classifier",
           "demo_ready", "discover_pages", "ensure_source_paths", "find_artifacts", "home", "page_url_path", "repo_root"]
