"""Helpers shared by the customer-service pages: locating the demo bot and caching it."""
from __future__ import annotations

import os
import re
from pathlib import Path

import streamlit as st

from verticore.paths import home as verticore_home
from verticore.text_safety import escape_markdown

# Everything below that reaches st.markdown / captions / labels comes from customers, KB files or
# config, so it is escaped: a message like ![x](http://evil/t.png) must show as text, not load a
# tracking image (or make a link, raw HTML, LaTeX or a colour directive) in an agent's browser.


def md_block(text: object) -> str:
    """Literal multi-line text for ``st.markdown``: every line escaped, line breaks kept as hard breaks."""
    lines = [escape_markdown(line) for line in str("" if text is None else text).splitlines()]
    return "  \n".join(line for line in lines if line)


_CITE_MARK = re.compile(r"\\\[(\d{1,3})\\\]")


def reply_markdown(text: object) -> str:
    """A bot answer for ``st.markdown``: escaped like :func:`md_block`, with the ``[n]`` citation
    markers left readable (a bare ``[n]`` is no link: its definition would need an unescaped ``[n]:``)."""
    return _CITE_MARK.sub(r"[\1]", md_block(text))


def ticket_markdown(t: dict) -> dict:
    """The markdown of one handoff ticket: ``label`` (expander), ``summary`` and one line per transcript message."""
    label = " · ".join(escape_markdown(t.get(k)) for k in ("ticket_id", "status", "reason", "created_at"))
    lines = []
    for m in t.get("transcript") or []:
        who = "🧑 Customer" if m.get("role") == "customer" else "🤖 Bot"
        lines.append(f"{who}: {md_block(m.get('text'))}")
    return {"label": label, "summary": f"**Summary:** {escape_markdown(t.get('summary'))}", "lines": lines}


def citation_markdown(c: dict) -> str:
    """One source under an answer: title › section, source file, date and score (all escaped)."""
    where = escape_markdown(c["title"]) + (f" › {escape_markdown(c['section'])}"
                                           if c.get("section") and c["section"] != c["title"] else "")
    return (f"**\\[{int(c['n'])}\\] {where}**  \n{escape_markdown(c['source'])} · updated "
            f"{escape_markdown(c.get('updated_at') or '–')} · score {float(c['score']):.2f}")


def home() -> Path:
    """The Verticore home (``VERTICORE_HOME``, else the core's default)."""
    return verticore_home()


def kb_dir() -> Path:
    """The bot directory: ``CUSTOMER_SERVICE_KB`` if set, else the demo bot under the home."""
    env = os.environ.get("CUSTOMER_SERVICE_KB")
    return Path(env) if env else home() / "customer_service" / "kb"


def require_bot_dir() -> Path:
    """Stop the page with a hint when no bot has been prepared yet."""
    d = kb_dir()
    if not (d / "kb.json").exists():
        st.info(f"No customer-service bot at {escape_markdown(d)} yet. Run `make demo` (or `customer-service demo "
                f"--home` {escape_markdown(home())}) to build the demo knowledge base and intent model.")
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
    st.error(escape_markdown(str(exc).splitlines()[0] if str(exc) else type(exc).__name__))


def bot_or_stop():
    """The prepared bot, or the page stops with a hint (no bot yet) or a one-line error."""
    from verticore.errors import VerticoreError

    directory = require_bot_dir()
    try:
        return get_bot(str(directory))
    except VerticoreError as exc:
        show_error(exc)
        st.stop()
