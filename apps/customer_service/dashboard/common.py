"""Helpers shared by the customer-service pages: locating the demo bot and caching it."""
from __future__ import annotations

import os
import sys
from pathlib import Path

_APPS = Path(__file__).resolve().parents[2]
for _p in (_APPS, _APPS.parent / "shared"):
    if _p.is_dir() and str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import streamlit as st  # noqa: E402


def home() -> Path:
    """The demo home (``VERTICORE_HOME``, default ``.verticore``)."""
    try:
        from verticore.dashboard import home as core_home

        return Path(core_home())
    except Exception:  # the hub module is optional for these pages
        return Path(os.environ.get("VERTICORE_HOME", ".verticore"))


def kb_dir() -> Path:
    """The bot directory: ``CUSTOMER_SERVICE_KB`` if set, else the demo bot under the home."""
    env = os.environ.get("CUSTOMER_SERVICE_KB")
    return Path(env) if env else home() / "customer_service" / "kb"


def require_bot_dir() -> Path:
    """Stop the page with a hint when no bot has been prepared yet."""
    d = kb_dir()
    if not (d / "kb.json").exists():
        st.info(f"No customer-service bot at `{d}` yet. Run `make demo` (or `customer-service demo --home {home()}`) "
                "to build the demo knowledge base and intent model.")
        st.stop()
    return d


@st.cache_resource(show_spinner="Loading the bot (models and knowledge base)…")
def get_bot(directory: str):
    """One Bot per directory per server process (models load once)."""
    from customer_service.bot import Bot

    bot = Bot.open(directory)
    bot.warm_up()
    return bot


def show_error(exc: Exception) -> None:
    st.error(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)


def bot_or_stop():
    """The prepared bot, or the page stops with a hint (no bot yet) or a one-line error."""
    from verticore.errors import VerticoreError

    directory = require_bot_dir()
    try:
        return get_bot(str(directory))
    except VerticoreError as exc:
        show_error(exc)
        st.stop()
