"""Demo state for the hub: the bundled sample catalog + synthetic users, indexed, fine-tuned, ready.

``prepare_demo(home)`` writes ``home / "recommender"``:

* ``state/`` -- the :class:`~recommender.recommender.Recommender` (catalog + FAISS index, interactions, EASE)
* ``embedder_behaviour/`` -- the embedder fine-tuned on co-interaction pairs (a few steps)
* ``demo.json`` -- what was prepared (and how), written last: its presence means "ready"

Idempotent: returns at once when ``demo.json`` matches the current settings. With
``VERTICORE_DEMO_FAST=1`` everything is tiny (60 items, 2 fine-tuning steps) for tests.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

from verticore.io import atomic_write_json, read_json
from verticore.paths import app_home
from verticore.settings import get_settings

SAMPLES = Path(__file__).resolve().parent / "samples"
DEMO_VERSION = 2  # 2: the hybrid alpha is tuned on a holdout and stored with the state
TEMPLATE = "{title} ({year}). {genre}. {description} Tags: {tags}"


def demo_dir(home: Path) -> Path:
    """Where the recommender's demo state lives under the hub's home."""
    return app_home("recommender", Path(home))


def _settings(fast: bool | None = None) -> dict:
    fast = get_settings().demo_fast if fast is None else bool(fast)
    return {"version": DEMO_VERSION, "fast": fast, "max_items": 60 if fast else None, "finetune_steps": 2 if fast else 30,
            "batch_size": 8 if fast else 32}


def is_ready(home: Path, fast: bool | None = None) -> bool:
    """True when :func:`prepare_demo` has completed for these settings (``fast``: default ``VERTICORE_DEMO_FAST``)."""
    f = demo_dir(home) / "demo.json"
    if not f.exists():
        return False
    try:
        meta = read_json(f, "demo state")
    except Exception:
        return False
    return meta.get("settings") == _settings(fast) and (demo_dir(home) / "state" / "recommender.json").exists()


def prepare_demo(home: Path, show_progress: bool = True, fast: bool | None = None) -> None:
    """Build the recommender demo state under ``home / "recommender"`` (idempotent).

    ``fast`` (default: ``VERTICORE_DEMO_FAST``): 60 items and 2 fine-tuning steps.
    """
    from tqdm.auto import tqdm

    from verticore import Embedder
    from verticore.errors import DataError
    from verticore.io import read_table

    from . import EASE, Catalog, Interactions, Recommender
    from .training import DEFAULT_ALPHA, finetune_on_behaviour, tune_alpha

    home = Path(home)
    if is_ready(home, fast):
        return
    out = demo_dir(home)
    out.mkdir(parents=True, exist_ok=True)
    settings = _settings(fast)
    t0 = time.time()
    steps = tqdm(total=5, desc="recommender demo", unit="step", disable=not show_progress)
    items = read_table(SAMPLES / "items.csv", ["item_id", "title", "description"])
    inter_df = read_table(SAMPLES / "interactions.csv", ["user_id", "item_id"])
    if settings["max_items"]:
        items = items.groupby("genre", sort=False).head(max(1, settings["max_items"] // items["genre"].nunique()))
    records = items.to_dict(orient="records")
    steps.set_postfix_str("embedding the catalog")
    catalog = Catalog.from_records(records, embedder=Embedder("default", batch_size=64), template=TEMPLATE,
                                   show_progress=show_progress)
    inter = Interactions.from_dataframe(inter_df, known_items=catalog.ids)
    steps.update(1)

    steps.set_postfix_str("fine-tuning on behaviour")
    ft_dir = out / "embedder_behaviour"
    shutil.rmtree(ft_dir, ignore_errors=True)
    res = finetune_on_behaviour(inter, catalog.texts, ft_dir, window=3, max_gap_days=None,
                                batch_size=settings["batch_size"], learning_rate=5e-5, max_length=64,
                                max_steps=settings["finetune_steps"], dev_fraction=0.0 if settings["fast"] else 0.02,
                                max_pairs=64 if settings["fast"] else None, show_progress=show_progress)
    steps.update(1)

    steps.set_postfix_str("re-embedding with the fine-tuned model")
    tuned = Catalog.from_records(records, embedder=Embedder(str(res.artifact_dir), batch_size=64), template=TEMPLATE,
                                 show_progress=show_progress)
    steps.update(1)

    steps.set_postfix_str("fitting EASE, tuning the hybrid weight")
    ease = EASE(l2=20.0).fit(inter)
    try:  # the same holdout tuning as `recommender build`; its scores are what the page shows
        tuning = tune_alpha(tuned, inter, l2=20.0, n_interests=2, max_users=40 if settings["fast"] else 300)
        alpha, tuning_info = tuning.alpha, tuning.to_dict()
    except DataError as exc:
        alpha, tuning_info = DEFAULT_ALPHA, {"skipped": str(exc)}
    rec = Recommender(tuned, inter, cf=ease, mode="hybrid", alpha=alpha, n_interests=2, alpha_tuning=tuning_info)
    steps.update(1)

    steps.set_postfix_str("saving")
    shutil.rmtree(out / "state", ignore_errors=True)
    rec.save(out / "state")
    atomic_write_json(out / "demo.json", {"settings": settings, "items": len(tuned), "users": len(inter.users),
                                          "interactions": len(inter), "model": str(res.artifact_dir),
                                          "finetune": res.metrics, "seconds": round(time.time() - t0, 1)})
    steps.update(1)
    steps.close()


def load_demo(home: Path):
    """The demo :class:`~recommender.recommender.Recommender` (after :func:`prepare_demo`)."""
    from verticore.errors import ArtifactError

    from .recommender import Recommender

    if not is_ready(home):
        raise ArtifactError(f"the recommender demo is not prepared under {demo_dir(home)}; run `make demo` "
                            "(or recommender.demo.prepare_demo)")
    return Recommender.load(demo_dir(home) / "state")
