"""The customer-service bot as a Verticore app (entry point ``verticore.apps``): its hub pages, its
command line (``verticore customer_service ...``), its demo state, and its API: ``verticore serve
--apps customer_service`` mounts it (and the chat widget at ``/v1/support/widget``) under ``/v1/support``.

It opens the bot in ``$CUSTOMER_SERVICE_KB`` if set, else the demo bot under
``$VERTICORE_HOME/customer_service/kb`` (``customer-service demo --home HOME`` prepares it).
"""
from __future__ import annotations

import os
from pathlib import Path

from fastapi import APIRouter

from verticore.errors import ArtifactError
from verticore.plugins import AppSpec, DashboardPage, ServingContext


def bot_directory(home: Path) -> Path:
    """Where the served bot lives: ``$CUSTOMER_SERVICE_KB``, else the demo bot under ``home``."""
    from .demo import demo_kb_dir

    env = os.environ.get("CUSTOMER_SERVICE_KB")
    return Path(env) if env else demo_kb_dir(Path(home))


def create_router(ctx: ServingContext) -> APIRouter:
    """Open the bot under ``ctx.home`` and build its routes; the bot closes with the server."""
    from .api import create_router as build
    from .bot import Bot

    directory = bot_directory(ctx.home)
    if not (directory / "kb.json").exists():
        raise ArtifactError(f"no customer-service bot at {directory}; run `customer-service demo --home {ctx.home}` "
                            "(or set CUSTOMER_SERVICE_KB to your bot directory)")
    bot = Bot.open(directory)
    router = build(bot)
    router.add_event_handler("shutdown", bot.close)
    return router


APP = AppSpec(
    name="customer_service",
    title="Customer service",
    summary="Answers customer questions from a knowledge base with sources, detects intent, hands off to humans.",
    icon=":material/support_agent:",
    pages=[DashboardPage("Support chat", "dashboard/chat_page.py", icon=":material/support_agent:"),
           DashboardPage("Knowledge base", "dashboard/kb_page.py", icon=":material/library_books:"),
           DashboardPage("Support analytics", "dashboard/analytics_page.py", icon=":material/analytics:"),
           DashboardPage("Handoff queue", "dashboard/handoff_page.py", icon=":material/assignment_ind:")],
    cli="customer_service.cli:app",
    api_prefix="support",
    create_router=create_router,
    prepare_demo="customer_service.demo:prepare_demo",
    demo_ready="customer_service.demo:is_ready",
    models={"intent": "customer_service.retrain:IntentRetrainer"},  # `verticore retrain --model intent`
)
