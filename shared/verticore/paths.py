"""Where Verticore keeps its state: the one place that resolves the home folder.

``home()`` is ``$VERTICORE_HOME`` (read through :mod:`verticore.settings`), else
``<repo>/.verticore`` in a source checkout, else ``~/.verticore``; every app keeps its own state
under ``app_home(<app name>)``.
"""
from __future__ import annotations

import re
from pathlib import Path

HOME_ENV = "VERTICORE_HOME"
_PACKAGE_DIR = Path(__file__).resolve().parent


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

    Looks upward from this package first (editable install / source tree), then from the cwd.
    """
    for start in (_PACKAGE_DIR, Path.cwd().resolve()):
        for candidate in (start, *start.parents):
            if _is_verticore_root(candidate):
                return candidate
    return None


def home() -> Path:
    """Where Verticore state lives: ``$VERTICORE_HOME``, else ``<repo>/.verticore``, else ``~/.verticore``."""
    from .settings import get_settings

    configured = get_settings().home
    if configured is not None:
        return configured
    root = repo_root()
    return (root / ".verticore") if root is not None else Path.home() / ".verticore"


def data_dir() -> Path:
    """The shared third-party datasets with fixed splits (read by benches and default recipes):
    ``$VERTICORE_DATA``, else ``shared/data`` beside the source checkout, else ``~/shared/data``."""
    from .settings import get_settings

    configured = get_settings().data
    if configured is not None:
        return configured
    root = repo_root()
    return (root.parent if root is not None else Path.home()) / "shared" / "data"


def app_home(app_name: str, base: Path | None = None) -> Path:
    """The folder an app keeps its state in: ``home() / app_name`` (or ``base / app_name``)."""
    if not app_name or Path(app_name).name != app_name or app_name in {".", ".."}:
        raise ValueError(f"invalid app name {app_name!r}: a single folder name is needed")
    return (base if base is not None else home()) / app_name


__all__ = ["HOME_ENV", "app_home", "data_dir", "home", "repo_root"]
