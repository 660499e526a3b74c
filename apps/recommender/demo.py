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
from verticore.settings import get_settings

SAMPLES = Path(__file__).resolve().parent / "samples"
DEMO_VERSION = 1
TEMPLATE = "{title} ({year}). {genre}. {description} Tags: {tags}"


def demo_dir(home: Path) -> Path:
    """Where the recommender's demo state lives under the hub's home."""
    return Path(home) / "recommender"


def _settings() -> dict:
    fast = get_settings().demo_fast
    return {"version": DEMO_VERSION, "fast": fast, "max_items": 60 if fast else None, "finetune_steps": 2 if fast else 30,
            "batch_size": 8 if fast else 32}


def is_ready(home: Path) -> bool:
    """True when :func:`prepare_demo` has completed for the current settings."""
    f = demo_dir(home) / "demo.json"
    if not f.exists():
        return False
    try:
        meta = read_json(f, "demo state")
    except Exception:
        return False
    return meta.get("settings") == _settings() and (demo_dir(home) / "state" / "recommender.json").exists()


def prepare_demo(home: Path, show_progress: bool = True) -> None:
    """Build the recommender demo state under ``home / "recommender"`` (idempotent)."""
    from tqdm.auto import tqdm

    from verticore import Embedder

    from . import EASE, Catalog, Interactions, Recommender
    from .training import finetune_on_behaviour
    from verticore.io import read_table

    home = Path(home)
    if is_ready(home):
        return
    out = demo_dir(home)
    out.mkdir(parents=True, exist_ok=True)
    settings = _settings()
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

    steps.set_postfix_str("fitting EASE")
    ease = EASE(l2=20.0).fit(inter)
    rec = Recommender(tuned, inter, cf=ease, mode="hybrid", alpha=0.5, n_interests=2)
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
