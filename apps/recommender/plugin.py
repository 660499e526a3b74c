"""The recommender as a Verticore app (entry point ``verticore.apps``): its hub page, its command line
(``verticore recommender ...``), its demo state, and its API: ``verticore serve --apps recommender``
mounts it under ``/v1/rec``.

It serves the state that ``recommender demo`` (or the hub's ``make demo``) prepared under
``$VERTICORE_HOME/recommender/state``; events and item changes are persisted there.
"""
from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter

from verticore.errors import ArtifactError
from verticore.plugins import AppSpec, DashboardPage, ServingContext


def create_router(ctx: ServingContext) -> APIRouter:
    """Load the recommender state under ``ctx.home`` and build its routes."""
    from .api import create_router as build
    from .demo import demo_dir
    from .recommender import Recommender

    state = demo_dir(ctx.home) / "state"
    if not (state / "recommender.json").exists():
        raise ArtifactError(f"no recommender state in {state}; run `recommender demo --home {ctx.home}` first")
    rec = Recommender.load(state)
    rec.follow_registry(Path(ctx.home) / "registry")  # `verticore retrain --app recommender` promotions
    return build(rec, state_dir=state)


APP = AppSpec(
    name="recommender",
    title="Recommender",
    summary="Recommends items from what they say and what users did, served from a FAISS index.",
    icon=":material/recommend:",
    pages=[DashboardPage("Recommender", "dashboard/recommender_page.py", icon=":material/recommend:",
                         url_path="recommender")],
    cli="recommender.cli:app",
    api_prefix="rec",
    create_router=create_router,
    prepare_demo="recommender.demo:prepare_demo",
    demo_ready="recommender.demo:is_ready",
    models={"cf": "recommender.retrain:CFRetrainer",  # `verticore retrain --app recommender --model cf|embedder`
            "embedder": "recommender.retrain:EmbedderRetrainer"},
)
