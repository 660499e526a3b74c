"""Support analytics: intent mix, deflection, escalations, unanswered questions, feedback, latency."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from customer_service.dashboard.common import require_bot_dir
from verticore.errors import VerticoreError

st.title("Support analytics")
directory = require_bot_dir()
try:
    from customer_service.store import BotStore

    a = BotStore(directory / "bot.sqlite").analytics()
except VerticoreError as exc:
    st.error(str(exc))
    st.stop()

if not a["turns"]:
    st.info("No conversations yet: ask something on the Support chat page.")
    st.stop()


def pct(x):
    return "–" if x is None else f"{100 * x:.0f}%"


def ms(x):
    return "–" if x is None else f"{x:.0f} ms"


c = st.columns(6)
c[0].metric("Conversations", a["sessions"])
c[1].metric("Messages", a["turns"])
c[2].metric("Deflection rate", pct(a["deflection_rate"]), help="conversations solved without a human")
c[3].metric("Escalations", a["escalations"])
c[4].metric("Latency p50", ms(a["latency_p50_ms"]))
c[5].metric("Latency p95", ms(a["latency_p95_ms"]))

left, right = st.columns(2)
with left:
    st.subheader("Intent mix")
    st.bar_chart(pd.DataFrame({"intent": list(a["intent_mix"]), "messages": list(a["intent_mix"].values())}),
                 x="intent", y="messages", horizontal=True)
with right:
    st.subheader("Escalation reasons")
    if a["escalation_reasons"]:
        st.bar_chart(pd.DataFrame({"reason": list(a["escalation_reasons"]), "count": list(a["escalation_reasons"].values())}),
                     x="reason", y="count", horizontal=True)
    else:
        st.caption("no escalations")
    fb = a["feedback"]
    st.subheader("Feedback")
    f1, f2, f3 = st.columns(3)
    f1.metric("👍", fb["up"])
    f2.metric("👎", fb["down"])
    f3.metric("Satisfaction", pct(fb["up"] / (fb["up"] + fb["down"])) if fb["up"] + fb["down"] else "–")

st.subheader("Unanswered questions")
if a["unanswered"]:
    st.dataframe(pd.DataFrame(a["unanswered"]), hide_index=True, width="stretch")
else:
    st.caption("none")
st.caption(f"{a['open_tickets']} open handoff tickets · answered {pct(a['answered_rate'])} of messages")
