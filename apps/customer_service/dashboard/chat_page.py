"""Support chat: ask the bot, see sources, intent, confidence, escalations; rate answers."""
from __future__ import annotations

import streamlit as st

from customer_service.dashboard.common import bot_or_stop, citation_markdown, escape_markdown, md_block, reply_markdown

st.title("Support chat")
st.caption("Answers come only from the knowledge base, with numbered sources. When the bot is unsure it opens a "
           "handoff ticket for a human colleague.")
bot = bot_or_stop()

state = st.session_state
state.setdefault("cs_messages", [])
state.setdefault("cs_session", None)

with st.sidebar:
    st.subheader("Conversation")
    if st.button("New conversation", icon=":material/refresh:"):
        state["cs_messages"], state["cs_session"] = [], None
    st.caption(f"session: {escape_markdown(state['cs_session'] or '(new)')}")
    st.caption(f"knowledge base: {bot.kb.chunk_count()} passages · intents: "
               f"{len(bot.intents.labels) if bot.intents else 'none'} · generator: {escape_markdown(bot.config.llm or 'extractive')}")

STATUS_ICON = {"answered": ":material/check_circle:", "needs_info": ":material/help:", "escalated": ":material/support_agent:",
               "no_answer": ":material/help:", "refused": ":material/block:", "rejected": ":material/error:"}


def render_reply(i: int, r: dict) -> None:
    st.markdown(reply_markdown(r["text"]))  # answers quote KB files and customer slot values: escaped
    conf = f"{r['confidence']:.2f}" if r.get("confidence") is not None else "–"
    intent = escape_markdown(r.get("intent") or ("out of scope" if r.get("out_of_scope") else "–"))
    bits = [f"intent **{intent}**", f"confidence **{conf}**", f"status **{escape_markdown(r['status'])}**",
            f"{r['latency_ms']:.0f} ms"]
    if r.get("escalated"):
        bits.append(f"ticket **{escape_markdown(r['ticket_id'])}** \\({escape_markdown(r['reason'])}\\)")
    st.caption(" · ".join(bits))
    if r.get("citations"):
        with st.expander(f"Sources ({len(r['citations'])})"):
            for c in r["citations"]:
                st.markdown(citation_markdown(c))
                st.caption(md_block(c["snippet"]))
    if r.get("turn_id") and r["status"] in {"answered", "needs_info"}:
        vote = st.feedback("thumbs", key=f"fb_{r['turn_id']}")
        if vote is not None and state.get(f"voted_{r['turn_id']}") != vote:
            bot.feedback(r["turn_id"], 1 if vote == 1 else -1)
            state[f"voted_{r['turn_id']}"] = vote
            st.toast("Thanks for the feedback!")


prompt = st.chat_input("Ask a question about orders, delivery, returns, payments…")
if not state["cs_messages"] and prompt is None:
    st.info("Try: *How long does standard delivery take?*, then *and how much does that cost?*, "
            "*Where is my order?* or *I want to talk to a human*.")

for i, m in enumerate(state["cs_messages"]):
    with st.chat_message(m["role"]):
        if m["role"] == "user":
            st.markdown(md_block(m["text"]))
        else:
            render_reply(i, m["reply"])

if prompt is not None:
    state["cs_messages"].append({"role": "user", "text": prompt})
    with st.chat_message("user"):
        st.markdown(md_block(prompt))
    with st.chat_message("assistant"):
        with st.spinner("Looking it up…"):
            reply = bot.ask(prompt, session_id=state["cs_session"]).to_dict()
        state["cs_session"] = reply["session_id"]
        state["cs_messages"].append({"role": "assistant", "reply": reply})
        render_reply(len(state["cs_messages"]) - 1, reply)
