"""The ``recommender`` command line: build, recommend, similar, search, items, finetune, serve, demo.

State lives in a directory (``--state``, default ``.verticore/recommender/cli``) written by
``recommender build``. Every user mistake prints one ``error: ...`` line and exits with status 3;
usage errors exit 2 and Ctrl-C 130 (see verticore.cli_support).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from verticore.cli_support import VerticoreGroup, add_version_option
from verticore.errors import VerticoreError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, cls=VerticoreGroup,
                  help="Text-embedding recommender on FAISS (Verticore app).")
items_app = typer.Typer(no_args_is_help=True, help="Add, update or remove catalog items (the index updates in place).")
app.add_typer(items_app, name="items")
add_version_option(app)

STATE = typer.Option(Path(".verticore/recommender/cli"), "--state", help="recommender state directory")
JSON_OPT = typer.Option(False, "--json", help="print pure JSON")
K_OPT = typer.Option(10, "-k", help="how many")


def _load(state: Path):
    from .recommender import Recommender

    return Recommender.load(state)


def _print_recs(recs, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps([r.to_dict() for r in recs], indent=2, ensure_ascii=False))
        return
    for n, r in enumerate(recs, 1):
        typer.echo(f"{n:2d}. {r.title} [{r.item}]  score={r.score:.3f}  {r.explanation}")


@app.command()
def build(
    items: Path = typer.Option(..., help="items CSV/JSONL (an id column + text fields)"),
    interactions: Optional[Path] = typer.Option(None, help="interactions CSV (user, item, rating/weight, timestamp)"),
    state: Path = STATE,
    template: str = typer.Option("{title}. {description} Tags: {tags}", help="item text template ({field} placeholders)"),
    model: str = typer.Option("default", help="embedding model: default, or a fine-tuned artifact directory"),
    min_rating: Optional[float] = typer.Option(None, help="keep interactions with rating >= this"),
    cf: bool = typer.Option(True, help="fit EASE for the hybrid score (needs interactions)"),
    l2: float = typer.Option(200.0, help="EASE regularisation"),
    alpha: Optional[float] = typer.Option(None, min=0.0, max=1.0,
                                          help="hybrid CF weight in [0, 1]; default: tuned on a time holdout "
                                               "of the interactions (each user's latest 20%)"),
    n_interests: int = typer.Option(1, help="interests per user profile (multi-interest when > 1)"),
    half_life_days: Optional[float] = typer.Option(None, help="time decay of user history"),
) -> None:
    """Embed and index a catalog, load interactions, fit EASE; save everything under --state."""
    from verticore import Embedder

    from .catalog import Catalog
    from .cf import EASE
    from .interactions import Interactions
    from .recommender import Recommender

    catalog = Catalog.from_file(items, embedder=Embedder(model), template=template, show_progress=True)
    # interactions are optional, so a file with a header and no rows is a valid "no behaviour yet"
    inter = Interactions.from_file(interactions, known_items=catalog.ids, min_weight=min_rating,
                                   allow_empty=True) if interactions else Interactions.empty()
    ease = EASE(l2=l2).fit(inter) if cf and len(inter) else None
    tuning, alpha_used = _pick_alpha(catalog, inter, ease, alpha, l2=l2, n_interests=n_interests,
                                     half_life_days=half_life_days)
    rec = Recommender(catalog, inter, cf=ease, alpha=alpha_used, n_interests=n_interests,
                      half_life_days=half_life_days, alpha_tuning=tuning)
    rec.save(state)
    typer.echo(json.dumps({"state": str(state), "items": len(catalog), "users": len(inter.users),
                           "interactions": len(inter), "skipped_interactions": inter.skipped, "mode": rec.mode,
                           "alpha": rec.alpha, "alpha_tuning": tuning}))


def _pick_alpha(catalog, inter, ease, alpha: Optional[float], **kwargs) -> tuple[Optional[dict], float]:
    """The hybrid weight for ``build``: ``alpha`` when given, else tuned on a holdout (0.5 if it cannot be)."""
    from .training import DEFAULT_ALPHA, tune_alpha

    if alpha is not None:
        return None, float(alpha)
    if ease is None:  # text-only model: alpha is never used
        return None, DEFAULT_ALPHA
    try:
        tuning = tune_alpha(catalog, inter, **kwargs)
    except VerticoreError as exc:
        typer.echo(f"warning: alpha not tuned ({exc}); using {DEFAULT_ALPHA}", err=True)
        return {"skipped": str(exc)}, DEFAULT_ALPHA
    return tuning.to_dict(), tuning.alpha


@app.command()
def recommend(
    user: str = typer.Argument(..., help="user id"),
    k: int = typer.Option(10, "-k", help="how many"),
    state: Path = STATE,
    diversity: float = typer.Option(0.0, min=0.0, max=1.0, help="MMR diversity (0..1)"),
    prior: float = typer.Option(0.0, min=0.0, max=1.0, help="popularity/recency prior weight (0..1)"),
    include_seen: bool = typer.Option(False, help="allow items the user already has"),
    filter: List[str] = typer.Option([], "--filter", help="FIELD=VALUE (repeatable)"),
    as_json: bool = JSON_OPT,
) -> None:
    """Recommendations for a known user, with explanations."""
    rec = _load(state)
    filters = _filters(filter)
    _print_recs(rec.recommend(user, k, exclude_seen=not include_seen, diversity=diversity, prior=prior,
                              filters=filters), as_json)


@app.command()
def taste(
    text: str = typer.Argument(..., help="free-text description of what you like"),
    k: int = K_OPT,
    state: Path = STATE,
    as_json: bool = JSON_OPT,
) -> None:
    """Cold start: recommendations from a description of your taste."""
    _print_recs(_load(state).recommend_for_text(text, k), as_json)


@app.command()
def similar(item: str = typer.Argument(..., help="item id"), k: int = K_OPT, state: Path = STATE,
            as_json: bool = JSON_OPT) -> None:
    """Items most similar to ITEM."""
    _print_recs(_load(state).similar_items(item, k), as_json)


@app.command()
def search(query: str = typer.Argument(..., help="search text"), k: int = K_OPT, state: Path = STATE,
           as_json: bool = JSON_OPT) -> None:
    """Semantic search over item texts."""
    _print_recs(_load(state).search(query, k), as_json)


@items_app.command("upsert")
def items_upsert(file: Path = typer.Argument(..., help="CSV/JSONL of items"), state: Path = STATE) -> None:
    """Add or update items (only new/changed texts are embedded)."""
    from verticore.io import read_table

    rec = _load(state)
    report = rec.upsert_items(read_table(file), show_progress=True)
    rec.save(state)
    typer.echo(json.dumps({**report.to_dict(), "items": len(rec.catalog)}))


@items_app.command("remove")
def items_remove(ids: List[str] = typer.Argument(..., help="item ids"), state: Path = STATE) -> None:
    """Remove items from the catalog and the index."""
    rec = _load(state)
    n = rec.remove_items(ids)
    rec.save(state)
    typer.echo(json.dumps({"removed": n, "items": len(rec.catalog)}))


@app.command()
def finetune(
    items: Path = typer.Option(..., help="items CSV/JSONL"),
    interactions: Path = typer.Option(..., help="training interactions CSV"),
    out: Path = typer.Option(..., help="artifact directory to write"),
    template: str = typer.Option("{title}. {description} Tags: {tags}", help="item text template ({field} placeholders)"),
    window: int = typer.Option(3, help="pair each item with the user's next N items"),
    max_gap_days: Optional[float] = typer.Option(30.0, help="only pair items consumed within this many days"),
    min_rating: Optional[float] = typer.Option(None, help="keep interactions with rating >= this"),
    epochs: int = typer.Option(1, help="passes over the training pairs"),
    batch_size: int = typer.Option(32, help="pairs per optimiser step (in-batch negatives)"),
    max_steps: Optional[int] = typer.Option(None, help="stop after N optimiser steps"),
    learning_rate: float = typer.Option(5e-5, help="learning rate"),
) -> None:
    """Fine-tune the embedder on co-interaction pairs; build with --model OUT to use it."""
    from verticore.io import read_table

    from .catalog import _auto_id_field, render_template
    from .interactions import Interactions
    from .training import finetune_on_behaviour

    df = read_table(items)
    idf = _auto_id_field(df.columns)
    texts = {}
    for r in df.to_dict(orient="records"):
        t = render_template(template, r)
        if t:
            texts[str(r[idf])] = t
    inter = Interactions.from_file(interactions, known_items=texts, min_weight=min_rating)
    res = finetune_on_behaviour(inter, texts, out, window=window, max_gap_days=max_gap_days, epochs=epochs,
                                batch_size=batch_size, max_steps=max_steps, learning_rate=learning_rate)
    typer.echo(json.dumps({"artifact": str(res.artifact_dir), "metrics": res.metrics}, default=str))


@app.command()
def serve(state: Path = STATE, host: str = typer.Option("127.0.0.1", help="interface to listen on (0.0.0.0: all)"),
          port: int = typer.Option(8010, help="TCP port"),
          keys_db: Optional[Path] = typer.Option(None, "--keys-db", help="API keys database (default "
                                                 "$VERTICORE_HOME/serving/keys.db; create keys with `verticore keys create`)"),
          insecure_no_auth: bool = typer.Option(False, "--insecure-no-auth",
                                                help="serve without API keys (local experiments only)")) -> None:
    """Serve /recommend, /similar, /search, /events, /items and /health over HTTP (docs at /docs).

    Every route needs an API key ('Authorization: Bearer vk_...'): reads need the rec:read scope,
    writes rec:write; --insecure-no-auth turns that off."""
    import uvicorn

    from verticore.serving import ServingSettings

    from .api import create_app

    settings = ServingSettings(keys_db=keys_db, insecure_no_auth=insecure_no_auth)
    uvicorn.run(create_app(_load(state), state_dir=state, settings=settings), host=host, port=port)


@app.command()
def demo(home: Path = typer.Option(Path(".verticore"), help="hub home (VERTICORE_HOME)")) -> None:
    """Prepare the demo state (bundled sample catalog + synthetic users) under HOME/recommender."""
    from .demo import demo_dir, prepare_demo

    prepare_demo(home, show_progress=True)
    typer.echo(f"demo ready in {demo_dir(home)}")


def _filters(specs: list[str]) -> dict[str, str] | None:
    out: dict[str, str] = {}
    for s in specs:
        if "=" not in s:
            raise VerticoreError(f"--filter {s!r} must look like FIELD=VALUE")
        f, v = s.split("=", 1)
        out[f.strip()] = v.strip()
    return out or None


def main(argv: list[str] | None = None) -> None:
    """Entry point (exit codes: see verticore.cli_support)."""
    from verticore.cli_support import run_app

    run_app(app, argv)


if __name__ == "__main__":
    main()
