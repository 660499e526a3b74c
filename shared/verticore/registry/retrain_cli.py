"""``verticore retrain --app APP --model NAME``: one round of the retrain loop (:mod:`verticore.registry.loop`).

Mounted on the core CLI in :mod:`verticore.cli`. Cron-able: exit 0 whether the candidate was
promoted, rejected by the gate or there was nothing to train (``--json`` tells which in
``status``); 2 on a usage error; 3 on a data error (unknown app or model, unreadable data).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer


def retrain_command(
    app: str = typer.Option(..., "--app", help="installed app (see `verticore apps`)"),
    model: str = typer.Option(..., "--model", help="one of the app's retrainable models (AppSpec.models)"),
    dry_run: bool = typer.Option(False, "--dry-run", help="show what would be trained and on how much new data; "
                                                          "train nothing"),
    tolerance: float = typer.Option(0.01, "--tolerance", min=0.0,
                                    help="how much worse than production the candidate may be on the primary metric"),
    home: Optional[Path] = typer.Option(None, "--home", help="Verticore home with the app's feedback "
                                                             "(default $VERTICORE_HOME)"),
    registry: Optional[Path] = typer.Option(None, "--registry", help="registry folder (default "
                                                                     "$VERTICORE_HOME/registry)"),
    by: Optional[str] = typer.Option(None, "--by", help="who promotes (default: login name)"),
    as_json: bool = typer.Option(False, "--json", help="print pure JSON"),
) -> None:
    """Retrain a model on the labels given since its production version; promote only if the gate passes."""
    from .loop import retrain

    if registry is None and home is not None:
        registry = home / "registry"
    result = retrain(app, model, home=home, registry=registry, dry_run=dry_run, tolerance=tolerance, by=by)
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2, ensure_ascii=False, default=str))
    else:
        typer.echo(result.message)
