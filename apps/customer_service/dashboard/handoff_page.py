"""Handoff queue: tickets opened by the bot, with transcripts; take over or resolve them."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import require_bot_dir, ticket_markdown  # noqa: E402

import streamlit as st  # noqa: E402

from customer_service.store import BotStore  # noqa: E402

st.title("Handoff queue")
st.caption("Conversations the bot handed over (low confidence, out of scope, no evidence, repeated failure, "
           "explicit request or negative sentiment). Customer details are redacted.")
directory = require_bot_dir()
store = BotStore(directory / "bot.sqlite")

status = st.segmented_control("Status", ["open", "in_progress", "resolved", "all"], default="open")
tickets = store.tickets(None if status in (None, "all") else status)
st.metric("Tickets", len(tickets))
if not tickets:
    st.info("No tickets with this status.")
for t in tickets:
    view = ticket_markdown(t)  # customer text is escaped: it shows as typed, never as images/links/HTML
    with st.expander(view["label"], expanded=t is tickets[0]):
        st.markdown(view["summary"])
        for line in view["lines"]:
            st.markdown(line)
        b1, b2, _ = st.columns([1, 1, 3])
        if t["status"] == "open" and b1.button("Take over", key=f"take_{t['ticket_id']}"):
            store.set_ticket_status(t["ticket_id"], "in_progress")
            st.rerun()
        if t["status"] != "resolved" and b2.button("Resolve", key=f"res_{t['ticket_id']}", type="primary"):
            store.set_ticket_status(t["ticket_id"], "resolved")
            st.rerun()
