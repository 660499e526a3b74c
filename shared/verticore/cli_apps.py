"""The installed apps inside the ``verticore`` command: ``verticore apps`` and ``verticore <app> ...``.

The root group (:class:`AppsGroup`) adds one subcommand per app registered under the
``verticore.apps`` entry-point group whose :class:`~verticore.plugins.AppSpec` has a ``cli``; the
app's command line is imported only when that subcommand runs (help listings show the app's title),
so ``verticore --help`` stays fast and a broken app cannot break the core's commands. A core command
keeps its name when an app is called the same; ``my-app`` also finds ``my_app``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer
from typer.core import TyperCommand

from .cli_support import VerticoreGroup
from .errors import DataError
from .plugins import AppSpec, discover_apps


class AppsGroup(VerticoreGroup):
    """Root group of ``verticore``: the core's commands, then one per installed app with a command line."""

    _apps: dict[str, AppSpec] | None = None
    _app_errors: dict[str, str] | None = None

    def installed_apps(self) -> dict[str, AppSpec]:
        """The discovered apps with a ``cli`` (cached per process); load failures go to :attr:`app_errors`."""
        if self._apps is None:
            errors: dict[str, str] = {}
            try:
                found = discover_apps(on_error=errors.__setitem__)
            except DataError as exc:  # two apps with one name: the core's commands must still work
                errors["*"] = str(exc)
                found = {}
            self._apps = {name: spec for name, spec in found.items() if spec.cli is not None}
            self._app_errors = errors
        return self._apps

    @property
    def app_errors(self) -> dict[str, str]:
        """``{entry point name: one-line reason}`` for apps that failed to load."""
        self.installed_apps()
        return dict(self._app_errors or {})

    def _app_named(self, name: str | None) -> AppSpec | None:
        if not name or name in self.commands:  # the core's own commands win
            return None
        apps = self.installed_apps()
        return apps.get(name) or apps.get(name.replace("-", "_"))

    def list_commands(self, ctx: Any) -> list[str]:
        core = super().list_commands(ctx)
        return core + [name for name in self.installed_apps() if name not in self.commands]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        core = super().get_command(ctx, cmd_name)
        if core is not None:
            return core
        spec = self._app_named(cmd_name)
        if spec is None:
            return None
        # a placeholder for help listings; running the subcommand loads the real one (resolve_command)
        about = f"{spec.title} app. {spec.summary}".strip()
        return TyperCommand(name=spec.name, help=about, short_help=about)

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        spec = self._app_named(args[0] if args else None)
        if spec is None:
            return super().resolve_command(ctx, args)
        try:
            command = spec.load_cli()
        except DataError:
            raise
        except Exception as exc:  # an app whose CLI cannot be imported: one line, the core still works
            text = (str(exc).strip().splitlines() or [""])[0][:300]
            raise DataError(f"app {spec.name}: its command line failed to load "
                            f"({type(exc).__name__}: {text})") from None
        return args[0], command, args[1:]


def describe_apps(home: Path | None = None) -> list[dict[str, Any]]:
    """Every installed app as plain JSON, with ``demo_ready`` under ``home`` (default: the Verticore home)."""
    from .paths import home as default_home

    base = home or default_home()
    rows = []
    for spec in discover_apps().values():
        row = spec.describe()
        row["demo_ready"] = spec.is_demo_ready(base)
        rows.append(row)
    return rows


def apps_command(
    as_json: bool = typer.Option(False, "--json", help="print a JSON list (pure JSON on stdout)"),
    home: Optional[Path] = typer.Option(None, "--home", help="Verticore home to check the demo state in (default: "
                                        "$VERTICORE_HOME, <repo>/.verticore, ~/.verticore)"),
) -> None:
    """List the installed apps (entry-point group verticore.apps): title, command, API prefix, pages, demo state."""
    errors: dict[str, str] = {}
    rows = describe_apps(home)
    discover_apps(on_error=errors.__setitem__)  # collect load failures to report them too
    if as_json:
        typer.echo(json.dumps({"apps": rows, "failed": errors}, indent=2))
        return
    if not rows:
        typer.echo("no apps installed (apps register under the 'verticore.apps' entry-point group)")
    for row in rows:
        parts = [f"verticore {row['name']}" if row["cli"] else "no CLI",
                 f"/v1/{row['api_prefix']}" if row["api_prefix"] else "no API",
                 f"{len(row['pages'])} page(s)",
                 "demo ready" if row["demo_ready"] else ("demo not prepared" if row["prepare_demo"] else "no demo")]
        typer.echo(f"{row['name']:<20} {row['title']:<22} " + " | ".join(parts))
    for name, reason in errors.items():
        typer.echo(f"{name:<20} FAILED TO LOAD: {reason}", err=True)


__all__ = ["AppsGroup", "apps_command", "describe_apps"]
