"""The customer-service HTTP API (issue #13): customer chat and a real agent reply flow, with API keys.

The bot runs on the bundled sample KB with a scripted intent stand-in (as in
test_customer_service_bot.py); keys live in a real key store, so auth is the serving layer's.
"""
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from customer_service.api import create_app
from customer_service.bot import Bot, known_intent_labels
from customer_service.intents import IntentResult
from customer_service.kb import KnowledgeBase
from customer_service.store import BOT_MIGRATIONS, BotStore
from customer_service.templates import TemplateSet
from verticore.serving import KeyStore, ServingSettings

SAMPLES = Path(__file__).resolve().parents[1] / "apps" / "customer_service" / "samples"
V = "/v1/support"


class ScriptedIntents:
    """Stand-in intent model with labels: keyword -> (intent, confidence); anything else is out of scope."""

    labels = ["delivery_time", "refund_status", "track_order"]
    rules = {"where is my order": ("track_order", 0.93)}

    def classify(self, text):
        for key, (intent, conf) in self.rules.items():
            if key in text.lower():
                return IntentResult(intent, conf, [(intent, conf)], False, conf)
        return IntentResult(None, 0.2, [("track_order", 0.2)], True, 0.2)

    def warm_up(self):
        pass


@pytest.fixture(scope="module")
def kb(tmp_path_factory, default_embedder):
    kb = KnowledgeBase(tmp_path_factory.mktemp("supportkb"), embedder=default_embedder)
    kb.ingest_dir(SAMPLES / "kb", show_progress=False)
    return kb


@pytest.fixture()
def served(kb, tmp_path):
    """(client, bot, keys): the app with auth on; keys = {"chat", "agent"} plaintext keys."""
    bot = Bot(kb, ScriptedIntents(), TemplateSet.load(SAMPLES / "templates.yaml"), store=BotStore(tmp_path / "bot.sqlite"))
    ks = KeyStore(tmp_path / "keys.db")
    keys = {"chat": ks.create("widget", ["support:chat"])[0], "agent": ks.create("alice", ["support:agent"])[0]}
    ks.close()
    app = create_app(bot, ServingSettings(keys_db=tmp_path / "keys.db", usage_db=tmp_path / "usage.db", access_log=False))
    with TestClient(app) as client:
        yield client, bot, keys
    bot.store.close()


def h(key):
    return {"Authorization": f"Bearer {key}"}


def test_keys_are_required_and_scoped(served):
    client, _, keys = served
    assert client.post(f"{V}/sessions").status_code == 401
    assert client.post(f"{V}/sessions", headers=h("not-a-key")).status_code == 401
    assert client.get(f"{V}/tickets").status_code == 401
    # the public widget key cannot act as an agent
    for method, path in [("get", "/tickets"), ("post", "/tickets/T-1/reply"), ("post", "/tickets/T-1/resolve"),
                         ("get", "/intents"), ("get", "/labelled-examples")]:
        assert client.request(method, f"{V}{path}", headers=h(keys["chat"]), json={}).status_code == 403, path
    # and an agent-only key does not chat
    assert client.post(f"{V}/sessions", headers=h(keys["agent"])).status_code == 403
    # the widget page itself is open (it carries the public key in its own URL)
    page = client.get(f"{V}/widget")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert client.get(f"{V}/widget.js").status_code == 200 and client.get(f"{V}/widget.css").status_code == 200


def test_answer_with_citations_and_unguessable_sessions(served):
    client, _, keys = served
    r = client.post(f"{V}/sessions", headers=h(keys["chat"]), json={"customer_ref": "cust-42"})
    assert r.status_code == 201
    sid = r.json()["session_id"]
    assert len(sid) >= 20  # secrets.token_urlsafe(16): 22 url-safe characters
    a = client.post(f"{V}/sessions/{sid}/messages", headers=h(keys["chat"]), json={"text": "How long does standard delivery take?"})
    assert a.status_code == 200, a.text
    body = a.json()
    assert body["status"] == "answered" and not body["escalated"] and body["ticket_id"] is None
    assert "3 to 5 business days" in body["answer"]
    assert body["citations"][0]["source"] == "shipping.md"
    assert set(body["citations"][0]) == {"n", "title", "source", "snippet"}
    assert {"intent", "confidence", "message_id"} <= set(body)
    t = client.get(f"{V}/sessions/{sid}", headers=h(keys["chat"])).json()
    assert t["status"] == "bot" and [m["role"] for m in t["messages"]] == ["customer", "bot"]
    assert t["messages"][1]["citations"][0]["source"] == "shipping.md"
    # unknown sessions are 404 everywhere, never created on the fly
    for method, path, body in [("get", "/sessions/nope", None), ("post", "/sessions/nope/messages", {"text": "hi"}),
                               ("post", "/sessions/nope/feedback", {"rating": "up"})]:
        assert client.request(method, f"{V}{path}", headers=h(keys["chat"]), json=body).status_code == 404, path
    assert client.get(f"{V}/sessions/{'x' * 500}", headers=h(keys["chat"])).status_code == 404


def test_feedback_is_stored_and_scoped_to_the_session(served):
    client, bot, keys = served
    sid = client.post(f"{V}/sessions", headers=h(keys["chat"])).json()["session_id"]
    assert client.post(f"{V}/sessions/{sid}/feedback", headers=h(keys["chat"]), json={"rating": "up"}).status_code == 404
    mid = client.post(f"{V}/sessions/{sid}/messages", headers=h(keys["chat"]),
                      json={"text": "How do I reset my password?"}).json()["message_id"]
    r = client.post(f"{V}/sessions/{sid}/feedback", headers=h(keys["chat"]), json={"rating": "down", "comment": "mail me at a@b.de"})
    assert r.status_code == 200 and r.json() == {"message_id": mid, "rating": "down"}
    row = bot.store.conn.execute("SELECT rating, comment FROM feedback WHERE turn_id=?", (mid,)).fetchone()
    assert row["rating"] == -1 and row["comment"] == "mail me at [EMAIL]"
    assert client.post(f"{V}/sessions/{sid}/feedback", headers=h(keys["chat"]), json={"rating": "meh"}).status_code == 422
    # another session cannot rate this session's answer
    other = client.post(f"{V}/sessions", headers=h(keys["chat"])).json()["session_id"]
    assert client.post(f"{V}/sessions/{other}/feedback", headers=h(keys["chat"]),
                       json={"message_id": mid, "rating": "up"}).status_code == 404
    down = client.get(f"{V}/feedback?rating=down", headers=h(keys["agent"])).json()["feedback"]
    assert down[0]["turn_id"] == mid and down[0]["session_id"] == sid and down[0]["rating"] == "down"
    # an agent corrects the intent of the thumbs-down message: a labelled example for retraining
    c = client.post(f"{V}/sessions/{sid}/messages/{mid}/correction", headers=h(keys["agent"]),
                    json={"agent": "alice", "intent": "track_order"})
    assert c.status_code == 200, c.text
    c2 = client.post(f"{V}/sessions/{sid}/messages/{mid}/correction", headers=h(keys["agent"]),
                     json={"agent": "bob", "intent": "out_of_scope"})
    assert c2.status_code == 200
    ex = bot.store.labelled_examples("agent_correction")
    assert [(e["text"], e["intent"], e["agent"], e["turn_id"]) for e in ex] == \
        [("How do I reset my password?", "out_of_scope", "bob", mid)]  # the later correction replaces the first
    bad = client.post(f"{V}/sessions/{sid}/messages/{mid}/correction", headers=h(keys["agent"]),
                      json={"agent": "bob", "intent": "cancel_everything"})
    assert bad.status_code == 422 and "unknown intent 'cancel_everything'" in bad.json()["detail"]
    assert client.post(f"{V}/sessions/{other}/messages/{mid}/correction", headers=h(keys["agent"]),
                       json={"agent": "bob", "intent": "track_order"}).status_code == 404


def test_handoff_claim_reply_resolve_flow(served):
    client, bot, keys = served
    chat, agent = h(keys["chat"]), h(keys["agent"])
    sid = client.post(f"{V}/sessions", headers=chat).json()["session_id"]
    client.post(f"{V}/sessions/{sid}/messages", headers=chat, json={"text": "Can I pay my order with a voucher card 4111 1111 1111 1111?"})
    esc = client.post(f"{V}/sessions/{sid}/messages", headers=chat, json={"text": "I want to talk to a human please"}).json()
    assert esc["escalated"] and esc["status"] == "escalated" and esc["ticket_id"].startswith("T-")
    assert esc["session_status"] == "waiting_for_agent"
    tid = esc["ticket_id"]
    assert client.get(f"{V}/sessions/{sid}", headers=chat).json()["status"] == "waiting_for_agent"

    queue = client.get(f"{V}/tickets?status=open", headers=agent).json()["tickets"]
    ticket = next(t for t in queue if t["ticket_id"] == tid)
    assert ticket["session_id"] == sid and ticket["reason"] == "human_requested"
    shown = " ".join(m["text"] for m in ticket["messages"])
    assert "[CARD]" in shown and "4111" not in shown  # agents see the redacted transcript
    assert client.get(f"{V}/tickets?status=bogus", headers=agent).status_code == 422

    assert client.post(f"{V}/tickets/{tid}/claim", headers=agent, json={"agent": "alice"}).json()["status"] == "claimed"
    assert client.post(f"{V}/tickets/{tid}/claim", headers=agent, json={"agent": "alice"}).status_code == 200  # idempotent
    assert client.post(f"{V}/tickets/{tid}/claim", headers=agent, json={"agent": "bob"}).status_code == 409
    assert client.get(f"{V}/tickets?status=claimed", headers=agent).json()["tickets"][0]["agent"] == "alice"
    assert client.post(f"{V}/tickets/T-NOPE/claim", headers=agent, json={"agent": "alice"}).status_code == 404

    rep = client.post(f"{V}/tickets/{tid}/reply", headers=agent,
                      json={"agent": "alice", "text": "Hi! Yes, vouchers work at checkout. Anything else?"})
    assert rep.status_code == 200 and rep.json()["role"] == "agent"
    assert client.post(f"{V}/tickets/{tid}/reply", headers=agent, json={"agent": "alice", "text": "  "}).status_code == 422
    t = client.get(f"{V}/sessions/{sid}", headers=chat).json()
    assert t["status"] == "with_agent" and t["ticket_id"] == tid
    assert t["messages"][-1]["role"] == "agent" and t["messages"][-1]["agent"] == "alice"
    assert "vouchers work at checkout" in t["messages"][-1]["text"]

    # while an agent has the conversation, the customer's messages go to the agent, not the bot
    fwd = client.post(f"{V}/sessions/{sid}/messages", headers=chat, json={"text": "Thanks, and for gift cards too?"}).json()
    assert fwd["status"] == "with_agent" and fwd["answer"] == "" and fwd["ticket_id"] == tid
    roles = [m["role"] for m in client.get(f"{V}/sessions/{sid}", headers=chat).json()["messages"]]
    assert roles[-2:] == ["agent", "customer"]  # ids grow at the end: a polling client just appends

    bad = client.post(f"{V}/tickets/{tid}/resolve", headers=agent, json={"agent": "alice", "intent": "nonsense"})
    assert bad.status_code == 422 and "unknown intent 'nonsense'" in bad.json()["detail"] and "track_order" in bad.json()["detail"]
    assert client.get(f"{V}/tickets/{tid}", headers=agent).json()["status"] == "claimed"  # nothing changed
    intents = client.get(f"{V}/intents", headers=agent).json()["intents"]
    assert "track_order" in intents and "out_of_scope" in intents
    res = client.post(f"{V}/tickets/{tid}/resolve", headers=agent,
                      json={"agent": "alice", "intent": "track_order", "note": "voucher question"})
    assert res.status_code == 200, res.text
    ex = res.json()["labelled_example"]
    # the question that led to the handoff (not the bare request for a human), redacted
    assert ex["text"] == "Can I pay my order with a voucher card [CARD]?" and ex["intent"] == "track_order"
    assert ex["source"] == "agent_resolution" and ex["ticket_id"] == tid and ex["agent"] == "alice"
    stored = client.get(f"{V}/labelled-examples?source=agent_resolution", headers=agent).json()["examples"]
    assert [e["text"] for e in stored] == [ex["text"]]
    assert res.json()["ticket"]["status"] == "resolved" and res.json()["ticket"]["intent"] == "track_order"
    assert client.post(f"{V}/tickets/{tid}/resolve", headers=agent, json={"agent": "alice", "intent": "track_order"}).status_code == 409
    assert client.post(f"{V}/tickets/{tid}/reply", headers=agent, json={"agent": "alice", "text": "hi"}).status_code == 409
    # after resolution the bot answers again
    again = client.post(f"{V}/sessions/{sid}/messages", headers=chat, json={"text": "How long does standard delivery take?"}).json()
    assert again["status"] == "answered" and "3 to 5 business days" in again["answer"]
    assert bot.store.state(sid).get("customer_ref") is None  # (no ref given here)


def test_usage_is_metered_per_message(served):
    client, _, keys = served
    sid = client.post(f"{V}/sessions", headers=h(keys["chat"])).json()["session_id"]
    client.post(f"{V}/sessions/{sid}/messages", headers=h(keys["chat"]), json={"text": "How do I reset my password?"})
    assert client.post(f"{V}/sessions/{sid}/messages", headers=h(keys["chat"]), json={"texts": "x"}).status_code == 422
    metrics = client.get("/metrics").text
    assert "verticore_" in metrics


def test_store_migration_keeps_old_tickets(tmp_path):
    """A v1 database (tickets 'in_progress') opens under v2: status becomes 'claimed', data kept."""
    from verticore.storage import connect

    conn = connect(tmp_path / "bot.sqlite", BOT_MIGRATIONS[:1])
    conn.execute("INSERT INTO sessions(session_id, created_at, updated_at) VALUES ('s1','t','t')")
    conn.execute("INSERT INTO tickets(ticket_id, session_id, created_at, reason, status, summary, transcript) "
                 "VALUES ('T-OLD','s1','t','no_evidence','in_progress','x','[]')")
    conn.close()
    store = BotStore(tmp_path / "bot.sqlite")
    assert store.ticket("T-OLD")["status"] == "claimed" and store.tickets("in_progress")[0]["ticket_id"] == "T-OLD"
    store.set_ticket_status("T-OLD", "in_progress")  # the old name still works
    assert store.session_status("s1")[0] == "with_agent"
    store.close()


def test_known_intent_labels_from_files(tmp_path):
    (tmp_path / "templates.yaml").write_text((SAMPLES / "templates.yaml").read_text())
    (tmp_path / "intents" / "m1").mkdir(parents=True)
    (tmp_path / "intents" / "m1" / "labels.json").write_text('{"labels": ["b_intent", "a_intent"]}')
    (tmp_path / "bot.json").write_text('{"intents": "intents", "templates": "templates.yaml"}')
    labels = known_intent_labels(tmp_path)
    assert labels[-1] == "out_of_scope" and {"a_intent", "b_intent", "track_order"} <= set(labels)
    assert known_intent_labels(tmp_path / "missing") == ["out_of_scope"]


def test_handoff_page_reply_and_resolve(tmp_path, monkeypatch):
    """The dashboard's agent flow: the reply lands in the customer's session (escaped on the page),
    the intent selectbox offers the bot's labels, and Resolve stores a labelled example."""
    from streamlit.testing.v1 import AppTest

    from customer_service.plugin import APP as CS_APP

    PAGES = [{"title": p.title, "path": str(CS_APP.page_file(p))} for p in CS_APP.pages]

    kb = tmp_path / "kb"
    kb.mkdir()
    (kb / "kb.json").write_text("{}")  # the page needs only the bot directory, its store and label files
    (kb / "templates.yaml").write_text((SAMPLES / "templates.yaml").read_text())
    (kb / "bot.json").write_text('{"templates": "templates.yaml"}')
    monkeypatch.setenv("CUSTOMER_SERVICE_KB", str(kb))
    store = BotStore(kb / "bot.sqlite")
    sid = store.new_session()
    question = "Where is my parcel ![x](http://evil.example/t.png)? Call +49 30 1234567"
    tid = store.open_ticket(sid, "no_evidence", f"no_evidence: {question}", pending=[{"role": "customer", "text": question}])
    store.add_turn(sid, question, "I'm handing this conversation to a colleague.", "escalated", escalated=True)
    store.close()

    page = next(p["path"] for p in PAGES if p["title"] == "Handoff queue")
    at = AppTest.from_file(page, default_timeout=60).run()
    assert not at.exception
    assert at.selectbox(key=f"intent_{tid}").options[-1] == "out_of_scope"
    assert "track_order" in at.selectbox(key=f"intent_{tid}").options
    at.text_input(key="agent_name").input("Dana").run()
    at.text_area(key=f"reply_{tid}").input("Your parcel left our warehouse today: [track](http://x.example)").run()
    at.button(key=f"send_{tid}").click().run()
    assert not at.exception and "Reply sent" in at.success[0].value
    store = BotStore(kb / "bot.sqlite")
    last = store.messages(sid)[-1]
    assert last["role"] == "agent" and last["agent"] == "Dana" and "left our warehouse" in last["text"]
    assert store.ticket(tid)["status"] == "claimed"  # replying claims an open ticket
    at.segmented_control[0].set_value("claimed").run()
    assert at.text_area(key=f"reply_{tid}").value == ""  # cleared after sending
    shown = [m.value for m in at.markdown if "warehouse" in m.value]
    assert shown and "\\[track\\]\\(http" in shown[0]  # the agent's text is escaped too
    assert not any("evil" in m.value and "![x](" in m.value for m in at.markdown)
    at.selectbox(key=f"intent_{tid}").set_value("track_order").run()
    at.button(key=f"res_{tid}").click().run()
    assert not at.exception
    ex = store.labelled_examples("agent_resolution")
    assert [(e["intent"], e["agent"], e["ticket_id"]) for e in ex] == [("track_order", "Dana", tid)]
    assert "[PHONE]" in ex[0]["text"] and "1234567" not in ex[0]["text"]
    assert store.ticket(tid)["status"] == "resolved"
    store.close()


def test_plugin_mounts_under_v1_support_of_verticore_serve(tmp_path, monkeypatch, default_embedder):
    """`verticore serve --apps customer_service`: the entry point opens the bot under HOME and the
    routes (auth on) live at /v1/support; a home without a bot is reported with the fix named."""
    from verticore.plugins import discover_apps
    from verticore.server import create_app as core_app

    monkeypatch.delenv("CUSTOMER_SERVICE_KB", raising=False)
    spec = discover_apps()["customer_service"]
    assert spec.api_prefix == "support" and spec.title == "Customer service"
    settings = ServingSettings(keys_db=tmp_path / "keys.db", usage_db=tmp_path / "usage.db", access_log=False)
    with TestClient(core_app(None, None, serving=settings, apps={"customer_service": spec}, home=tmp_path / "empty")) as c:
        status = c.get("/health").json()["apps"]["customer_service"]
        assert status.startswith("unavailable") and "customer-service demo --home" in status

    home = tmp_path / "home"
    KnowledgeBase(home / "customer_service" / "kb", embedder=default_embedder).ingest(SAMPLES / "kb" / "shipping.md", show_progress=False)
    ks = KeyStore(tmp_path / "keys.db")
    chat = ks.create("widget", ["support:chat"])[0]
    ks.close()
    settings = ServingSettings(keys_db=tmp_path / "keys.db", usage_db=tmp_path / "usage.db", access_log=False)
    with TestClient(core_app(None, None, serving=settings, apps={"customer_service": spec}, home=home)) as c:
        assert c.get("/health").json()["apps"]["customer_service"] == "ok (/v1/support)"
        assert c.post(f"{V}/sessions").status_code == 401
        sid = c.post(f"{V}/sessions", headers=h(chat)).json()["session_id"]
        r = c.post(f"{V}/sessions/{sid}/messages", headers=h(chat), json={"text": "How long does standard delivery take?"})
        assert r.status_code == 200 and "3 to 5 business days" in r.json()["answer"]
        assert c.get(f"{V}/widget").status_code == 200


def test_session_events_stream_new_messages(served):
    client, _, keys = served
    sid = client.post(f"{V}/sessions", headers=h(keys["chat"])).json()["session_id"]
    client.post(f"{V}/sessions/{sid}/messages", headers=h(keys["chat"]), json={"text": "How do I reset my password?"})
    assert client.get(f"{V}/sessions/nope/events", headers=h(keys["chat"])).status_code == 404
    assert client.get(f"{V}/sessions/{sid}/events").status_code == 401
    with client.stream("GET", f"{V}/sessions/{sid}/events?after=1&max_s=0.5", headers=h(keys["chat"])) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        body = "".join(r.iter_text())
    events = [block.splitlines() for block in body.strip().split("\n\n")]
    assert [e[0] for e in events] == ["event: message", "event: status"]  # only the bot's answer is new
    assert '"role": "bot"' in events[0][1] and '"status": "bot"' in events[1][1]


def test_serve_command_refuses_a_missing_bot(tmp_path):
    from typer.testing import CliRunner

    from customer_service.cli import app

    runner = CliRunner()
    r = runner.invoke(app, ["serve", "--kb", str(tmp_path / "nothing")])
    assert r.exit_code == 3 and "no knowledge base" in r.output
    helptext = runner.invoke(app, ["serve", "--help"]).output
    assert "--insecure-no-auth" in helptext and "--keys-db" in helptext and "--port" in helptext
