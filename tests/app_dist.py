"""Install throw-away Verticore apps for tests: a package plus a ``*.dist-info`` folder whose
``entry_points.txt`` registers it under ``verticore.apps``, all inside one temporary folder.

Put that folder on ``sys.path`` (``monkeypatch.syspath_prepend``) or on ``PYTHONPATH`` for a
subprocess and :func:`verticore.plugins.discover_apps` finds the app like any installed one.
"""
from __future__ import annotations

import sys
import textwrap
from pathlib import Path


def install_app(root: Path, package: str, files: dict[str, str], entry_point: str | None = None,
                app_name: str | None = None) -> Path:
    """Write ``root/<package>/<file>`` for every ``files`` item (dedented) and the dist-info that registers
    ``app_name = entry_point`` (default ``<package> = <package>.plugin:APP``). Returns the package folder."""
    pkg = root / package
    pkg.mkdir(parents=True, exist_ok=True)
    for rel, text in {"__init__.py": "", **files}.items():
        path = pkg / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    dist = root / f"{package}-0.1.dist-info"
    dist.mkdir(exist_ok=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {package.replace('_', '-')}\nVersion: 0.1\n",
                                   encoding="utf-8")
    (dist / "entry_points.txt").write_text(
        f"[verticore.apps]\n{app_name or package} = {entry_point or package + '.plugin:APP'}\n", encoding="utf-8")
    return pkg


def forget_modules(prefix: str) -> None:
    """Drop imported test-app modules so the next test imports its own copy."""
    for name in list(sys.modules):
        if name == prefix or name.startswith(prefix + ".") or name.startswith(prefix + "_"):
            del sys.modules[name]
