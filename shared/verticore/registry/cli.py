"""``verticore models``: list, show, promote, roll back, diff and prune registered model versions.

Mounted on the core CLI in :mod:`verticore.cli`; ``--json`` prints pure JSON on stdout.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer

models_app = typer.Typer(no_args_is_help=True, help="Model registry: versions, aliases (production, candidate), "
                                                    "promotion, rollback, diff, prune.")
_REG_OPT = typer.Option(None, "--registry", help="registry folder (default $VERTICORE_HOME/registry)")
_JSON_OPT = typer.Option(False, "--json", help="print pure JSON")
_APP_ARG = typer.Argument(..., help="app name (e.g. my_app)")
_MODEL_ARG = typer.Argument(..., help="model name within the app")


def _registry(root: Optional[Path]):
    from .store import ModelRegistry

    return ModelRegistry(root)


def _out(obj: Any) -> None:
    typer.echo(json.dumps(obj, indent=2, ensure_ascii=False, default=str))


def _line(v) -> str:
    acc = {k: v.metrics[k] for k in ("accuracy", "macro_f1") if isinstance(v.metrics.get(k), (int, float))}
    scores = " ".join(f"{k}={x:.4f}" for k, x in acc.items())
    return f"v{v.version:<5} {v.created_at:<26} {v.created_by:<12} parent={v.parent or '-':<5} {scores}"


def _num(x: Any, signed: bool = False) -> str:
    if x is None:
        return "-"
    return f"{x:+.4f}" if signed else f"{x:.4f}"


@models_app.command("list")
def models_list(app: Optional[str] = typer.Argument(None, help="app (omit: every app)"),
                model: Optional[str] = typer.Argument(None, help="model (omit: every model of the app)"),
                registry: Optional[Path] = _REG_OPT, as_json: bool = _JSON_OPT) -> None:
    """List registered models, or the versions of one model with its aliases."""
    reg = _registry(registry)
    if app and model:
        versions, bad, aliases = reg.versions(app, model), reg.incomplete(app, model), reg.aliases(app, model)
        if as_json:
            _out({"app": app, "model": model, "aliases": aliases,
                  "versions": [{**v.to_dict(), "aliases": sorted(a for a, n in aliases.items() if n == v.version)}
                               for v in versions],
                  "incomplete": [{"name": b.name, "reason": b.reason} for b in bad]})
            return
        if not versions:
            typer.echo(f"no versions of {app}/{model} in {reg.root}")
        for v in versions:
            tags = ",".join(sorted(a for a, n in aliases.items() if n == v.version))
            typer.echo(_line(v) + (f"  [{tags}]" if tags else ""))
        for b in bad:
            typer.echo(f"incomplete {b.name}: {b.reason} (ignored; `verticore models prune` removes it)")
        return
    rows = []
    for a, m in reg.models():
        if app and a != app:
            continue
        vs = reg.versions(a, m)
        rows.append({"app": a, "model": m, "versions": len(vs), "latest": vs[-1].version if vs else None,
                     "aliases": reg.aliases(a, m)})
    if as_json:
        _out(rows)
        return
    if not rows:
        typer.echo(f"no models in {reg.root}")
    for r in rows:
        al = " ".join(f"{k}=v{v}" for k, v in sorted(r["aliases"].items())) or "no aliases"
        typer.echo(f"{r['app']}/{r['model']}: {r['versions']} version(s), latest v{r['latest']}, {al}")


@models_app.command("show")
def models_show(app: str = _APP_ARG, model: str = _MODEL_ARG,
                version: str = typer.Argument("production", help="version number or alias"),
                registry: Optional[Path] = _REG_OPT, as_json: bool = _JSON_OPT) -> None:
    """One version: record, aliases, promotions, gate result and an integrity check of its files."""
    from ..errors import ArtifactError

    reg = _registry(registry)
    v = reg.get(app, model, version)
    try:
        reg.verify(v, full=True)
        integrity = "ok"
    except ArtifactError as exc:
        integrity = str(exc)
    aliases = sorted(a for a, n in reg.aliases(app, model).items() if n == v.version)
    promotions = [h for h in reg.history(app, model) if h.get("to") == v.version]
    gate = reg.read_gate(v)
    data = {**v.to_dict(), "path": str(v.path), "aliases": aliases, "promotions": promotions, "gate": gate,
            "integrity": integrity}
    if as_json:
        _out(data)
        return
    typer.echo(f"{v.name}  [{', '.join(aliases) or 'no alias'}]  integrity: {integrity}")
    typer.echo(f"  path            {v.path}")
    typer.echo(f"  created         {v.created_at} by {v.created_by}; parent {v.parent or '-'}")
    typer.echo(f"  data            {v.data_fingerprint}")
    typer.echo(f"  eval split      {v.eval_split}")
    typer.echo(f"  recipe          {json.dumps(v.recipe, sort_keys=True)}")
    typer.echo(f"  metrics         {json.dumps(v.metrics, sort_keys=True)}")
    typer.echo(f"  gate            {gate['result']['reason'] if gate else 'never gated'}")
    for h in promotions:
        typer.echo(f"  {h.get('action', '?'):<9} {h.get('alias')} {h.get('ts')} by {h.get('by')}: {h.get('reason') or '-'}")


@models_app.command("promote")
def models_promote(app: str = _APP_ARG, model: str = _MODEL_ARG,
                   version: str = typer.Argument(..., help="version number"),
                   alias: str = typer.Option("production", help="alias to move (production | candidate | ...)"),
                   by: Optional[str] = typer.Option(None, help="who promotes (default: login name)"),
                   reason: str = typer.Option("", help="why (kept in the promotion log)"),
                   force: bool = typer.Option(False, "--force", help="promote even though its gate failed"),
                   require_gate: bool = typer.Option(False, "--require-gate",
                                                     help="refuse a version with no passing gate against production"),
                   registry: Optional[Path] = _REG_OPT, as_json: bool = _JSON_OPT) -> None:
    """Point an alias at a version (verified first); a failed gate refuses production unless --force."""
    reg = _registry(registry)
    before = reg.aliases(app, model).get(alias)
    v = reg.promote(app, model, version, alias, by=by, reason=reason, force=force, require_gate=require_gate)
    if as_json:
        _out({"app": app, "model": model, "alias": alias, "from": before, "to": v.version})
        return
    typer.echo(f"{app}/{model} {alias}: v{before if before is not None else '-'} -> v{v.version}")


@models_app.command("rollback")
def models_rollback(app: str = _APP_ARG, model: str = _MODEL_ARG,
                    alias: str = typer.Option("production", help="alias to move back"),
                    by: Optional[str] = typer.Option(None, help="who rolls back (default: login name)"),
                    reason: str = typer.Option("", help="why (kept in the promotion log)"),
                    registry: Optional[Path] = _REG_OPT,
                    as_json: bool = _JSON_OPT) -> None:
    """Point an alias back at the version it pointed at before."""
    reg = _registry(registry)
    before = reg.aliases(app, model).get(alias)
    v = reg.rollback(app, model, alias, by=by, reason=reason)
    if as_json:
        _out({"app": app, "model": model, "alias": alias, "from": before, "to": v.version})
        return
    typer.echo(f"{app}/{model} {alias}: v{before} -> v{v.version} (rolled back)")


@models_app.command("diff")
def models_diff(app: str = _APP_ARG, model: str = _MODEL_ARG,
                a: str = typer.Argument(..., help="version or alias"), b: str = typer.Argument(..., help="version or alias"),
                registry: Optional[Path] = _REG_OPT, as_json: bool = _JSON_OPT) -> None:
    """Metrics side by side (b - a) and the recipe keys that differ."""
    d = _registry(registry).diff(app, model, a, b)
    if as_json:
        _out(d)
        return
    typer.echo(f"{app}/{model}: v{d['a']} vs v{d['b']}"
               + ("" if d["same_eval_split"] else "  (different evaluation splits: metrics are not comparable)"))
    typer.echo(f"  {'metric':<32} {'v' + str(d['a']):>10} {'v' + str(d['b']):>10} {'delta':>10}")
    for k, m in d["metrics"].items():
        typer.echo(f"  {k:<32} {_num(m['a']):>10} {_num(m['b']):>10} {_num(m['delta'], signed=True):>10}")
    for k, r in d["recipe"].items():
        typer.echo(f"  recipe {k}: {json.dumps(r['a'])} -> {json.dumps(r['b'])}")
    if not d["same_data"]:
        typer.echo(f"  data: {d['data_fingerprint']['a']} -> {d['data_fingerprint']['b']}")


@models_app.command("prune")
def models_prune(app: str = _APP_ARG, model: str = _MODEL_ARG,
                 keep: int = typer.Option(..., "--keep", help="newest versions to keep (aliased versions and their "
                                                              "rollback targets are always kept)"),
                 registry: Optional[Path] = _REG_OPT, as_json: bool = _JSON_OPT) -> None:
    """Delete old versions (the only command that deletes anything)."""
    removed = _registry(registry).prune(app, model, keep)
    if as_json:
        _out({"app": app, "model": model, "removed": removed})
        return
    typer.echo(f"removed {len(removed)} version folder(s) of {app}/{model}" + (f": {', '.join(removed)}" if removed else ""))
