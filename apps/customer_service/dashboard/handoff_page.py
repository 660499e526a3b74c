"""Handoff queue: tickets the bot opened, with live transcripts; claim, reply to the customer, resolve.

Replies go into the customer's session through the same store function as the HTTP API
(``POST /v1/support/tickets/{id}/reply``), so the customer sees them in the chat widget; resolving
saves the question with the chosen intent as a labelled example for retraining.
"""
from __future__ import annotations

import streamlit as st

from customer_service.bot import known_intent_labels
from customer_service.dashboard.common import md_block, require_bot_dir, show_error, ticket_markdown
from customer_service.store import OUT_OF_SCOPE_LABEL, BotStore
from verticore.dashboard import auth
from verticore.errors import VerticoreError

st.title("Handoff queue")
st.caption("Conversations the bot handed over (low confidence, out of scope, no evidence, repeated failure, "
           "explicit request or negative sentiment). Customer details are redacted. Your replies reach the "
           "customer's chat; resolving a ticket saves its question with the intent you pick for retraining.")
auth.guard_page()
directory = require_bot_dir()
store = BotStore(directory / "bot.sqlite")
try:
    labels = known_intent_labels(directory)
except VerticoreError as exc:  # a broken intent model must not hide the queue
    show_error(exc)
    labels = [OUT_OF_SCOPE_LABEL]

can_act = auth.require_role("agent", "Claiming, replying to and resolving tickets")
if can_act:
    user = auth.current_user()
    default_name = user.name if user is not None and user is not auth.LOCAL_ADMIN else "agent"
    agent = st.text_input("Your name (shown to the customer)", value=default_name, key="agent_name").strip()
else:
    agent = ""
flash = st.session_state.pop("handoff_flash", None)
if flash:
    (st.success if flash[0] == "ok" else st.error)(flash[1])

WHO = {"customer": "🧑 Customer", "bot": "🤖 Bot", "agent": "🎧 Agent"}


def _run(action, ok: str) -> None:
    """Run a store action from a button callback; the outcome shows after the rerun."""
    try:
        auth.check_role("agent", "handling tickets")  # again here: the UI check alone is not enough
        action()
        st.session_state["handoff_flash"] = ("ok", ok)
    except VerticoreError as exc:
        st.session_state["handoff_flash"] = ("error", str(exc).splitlines()[0])


def _reply(ticket_id: str) -> None:
    key = f"reply_{ticket_id}"
    text = st.session_state.get(key, "")
    _run(lambda: store.add_agent_reply(ticket_id, agent, text), f"Reply sent to the customer of {ticket_id}.")
    if st.session_state.get("handoff_flash", ("",))[0] == "ok":
        st.session_state[key] = ""  # allowed here: callbacks run before the widgets are drawn again


def _resolve(ticket_id: str) -> None:
    intent = st.session_state.get(f"intent_{ticket_id}")
    note = st.session_state.get(f"note_{ticket_id}") or None
    _run(lambda: store.resolve_ticket(ticket_id, agent, intent, labels, note=note),
         f"{ticket_id} resolved; its question was saved as a '{intent}' example.")


status = st.segmented_control("Status", ["open", "claimed", "resolved", "all"], default="open")
tickets = store.tickets(None if status in (None, "all") else status)
st.metric("Tickets", len(tickets))
if not tickets:
    st.info("No tickets with this status.")
for t in tickets:
    tid = t["ticket_id"]
    view = ticket_markdown(t)  # customer text is escaped: it shows as typed, never as images/links/HTML
    live = store.messages(t["session_id"])
    with st.expander(view["label"] + (f" · {md_block(t['agent'])}" if t.get("agent") else ""), expanded=t is tickets[0]):
        st.markdown(view["summary"])
        if live:  # the session as it is now (with agent replies); older tickets only have the handoff snapshot
            for m in live:
                who = WHO.get(m["role"], "🤖 Bot") + (f" {md_block(m['agent'])}" if m["role"] == "agent" else "")
                st.markdown(f"{who}: {md_block(m['text'])}")
        else:
            for line in view["lines"]:
                st.markdown(line)
        if t["status"] == "resolved":
            st.caption(f"Resolved as {md_block(t.get('intent') or '–')} by {md_block(t.get('agent') or '–')}"
                       + (f": {md_block(t['note'])}" if t.get("note") else ""))
            continue
        if not can_act:
            continue
        if t["status"] == "open":
            st.button("Claim", key=f"take_{tid}", disabled=not agent,
                      on_click=_run, args=(lambda tid=tid: store.claim_ticket(tid, agent), f"You have {tid}."))
        st.text_area("Reply to the customer", key=f"reply_{tid}", max_chars=4000,
                     placeholder="Your answer appears in the customer's chat.")
        st.button("Send reply", key=f"send_{tid}", disabled=not agent, on_click=_reply, args=(tid,))
        c1, c2 = st.columns([1, 2])
        c1.selectbox("Intent of the question", labels, key=f"intent_{tid}",
                     help="Saved with the customer's question as a labelled example for retraining.")
        c2.text_input("Note (optional)", key=f"note_{tid}")
        st.button("Resolve", key=f"res_{tid}", type="primary", disabled=not agent, on_click=_resolve, args=(tid,))
