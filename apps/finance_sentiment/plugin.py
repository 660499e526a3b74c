"""The finance sentiment monitor as a Verticore app (entry point ``verticore.apps``): its hub page,
its command line (``verticore finance_sentiment ...``), its demo state, and its API: ``verticore serve
--apps finance_sentiment`` mounts it under ``/v1/finance``, with the webhook deliverer running in the
background while it serves.

It opens the monitor installed under ``$VERTICORE_HOME/finance_sentiment`` (models, watchlist,
``config.yaml``, database), as ``finance-sentiment demo`` or ``train`` left it.
"""
from __future__ import annotations

from fastapi import APIRouter

from verticore.plugins import AppSpec, DashboardPage, ServingContext


def create_router(ctx: ServingContext) -> APIRouter:
    """Open the monitor under ``ctx.home`` and build its routes; delivery starts and stops with the server."""
    from .paths import APP_DIR_NAME, AppPaths
    from .pipeline import Monitor
    from .server import create_router as build
    from .webhooks import Deliverer

    paths = AppPaths(ctx.home / APP_DIR_NAME)
    monitor = Monitor.open(paths)
    deliverer = Deliverer(monitor.store, monitor.config.webhooks, allow_hosts=monitor.config.allow_hosts)
    router = build(monitor, config_path=paths.config, deliverer=deliverer)

    def stop() -> None:
        deliverer.stop()
        monitor.close()

    router.add_event_handler("startup", deliverer.start)
    router.add_event_handler("shutdown", stop)
    return router


APP = AppSpec(
    name="finance_sentiment",
    title="Finance sentiment",
    summary="Classifies the sentiment of financial news, tracks trends per company and alerts on surges.",
    icon=":material/monitoring:",
    pages=[DashboardPage("Finance sentiment monitor", "dashboard/monitor_page.py", icon=":material/monitoring:")],
    cli="finance_sentiment.cli:app",
    api_prefix="finance",
    create_router=create_router,
    prepare_demo="finance_sentiment.demo:prepare_demo",
    demo_ready="finance_sentiment.demo:is_ready",
    models={"sentiment": "finance_sentiment.retrain:SentimentRetrainer",
            "topics": "finance_sentiment.retrain:TopicRetrainer"},  # `verticore retrain --model sentiment|topics`
)
