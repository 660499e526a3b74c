"""Demo preparation and the Streamlit pages: AppTest on every page and one headless-Chromium screenshot.

The screenshot is saved to tests/_screenshots/customer_service_chat.png.
"""
import time

import pytest
from streamlit.testing.v1 import AppTest
from streamlit_harness import (
    HUB_SCRIPT,
    SCREENSHOTS,
    hub_page_url_path,
    prepared_demo_home,
    require_chromium,
    streamlit_browser,
)

from customer_service.plugin import APP as CS_APP

PAGE = {page.title: str(CS_APP.page_file(page)) for page in CS_APP.pages}


@pytest.fixture(scope="session")
def cs_home(tmp_path_factory):
    return prepared_demo_home(tmp_path_factory, only=("customer_service",))


@pytest.fixture()
def env(cs_home, monkeypatch):
    monkeypatch.setenv("VERTICORE_HOME", str(cs_home))
    monkeypatch.setenv("VERTICORE_DEMO_FAST", "1")  # same mode as the prepared home, so nothing retrains
    monkeypatch.delenv("CUSTOMER_SERVICE_KB", raising=False)
    return cs_home


def test_prepare_demo_is_idempotent_and_wires_the_intent_model(env):
    from customer_service.bot import Bot
    from customer_service.demo import demo_kb_dir, prepare_demo

    t0 = time.perf_counter()
    prepare_demo(env, show_progress=False)
    assert time.perf_counter() - t0 < 5
    bot = Bot.open(demo_kb_dir(env))
    assert bot.intents is not None and len(bot.intents.labels) == 8 and len(bot.templates) == 3
    assert bot.intents.oos_config["n_dev_out_of_scope"] == 16
    r = bot.ask("How long does express delivery take?")
    assert r.intent is None or r.intent in bot.intents.labels
    assert r.confidence is not None and r.status == "answered" and r.citations[0].source == "shipping.md"
    assert bot.store.tickets() and bot.store.analytics()["turns"] >= 10  # replayed demo conversations


def test_pages_render_without_exceptions(env):
    assert list(PAGE) == ["Support chat", "Knowledge base", "Support analytics", "Handoff queue"]
    kb = AppTest.from_file(PAGE["Knowledge base"], default_timeout=300).run()
    assert not kb.exception and kb.metric[0].value == "7" and "shipping.md" in kb.dataframe[0].value["doc_id"].tolist()
    assert any("Delivery times" in e.label for e in kb.expander)
    an = AppTest.from_file(PAGE["Support analytics"], default_timeout=300).run()
    assert not an.exception and {m.label for m in an.metric} >= {"Deflection rate", "Escalations", "Latency p95"}
    ho = AppTest.from_file(PAGE["Handoff queue"], default_timeout=300).run()
    assert not ho.exception and int(ho.metric[0].value) >= 1
    ho.button(key=[b.key for b in ho.button if b.key and b.key.startswith("take_")][0]).click().run()
    assert not ho.exception


def test_chat_page_answers_with_sources(env):
    at = AppTest.from_file(PAGE["Support chat"], default_timeout=300).run()
    assert not at.exception
    at.chat_input[0].set_value("How do I reset my password?").run()
    assert not at.exception
    text = " ".join(m.value for m in at.markdown)
    assert "Forgot password" in text and "[1]" in text
    assert any("Sources" in e.label for e in at.expander)
    assert any("confidence" in c.value for c in at.caption)


def test_empty_home_shows_a_hint(tmp_path, monkeypatch):
    monkeypatch.setenv("VERTICORE_HOME", str(tmp_path))
    at = AppTest.from_file(PAGE["Support chat"], default_timeout=60).run()
    assert not at.exception and "make demo" in at.info[0].value


@pytest.mark.browser
@pytest.mark.slow
def test_chat_page_in_chromium(cs_home):
    require_chromium()

    def ask(page):
        box = page.get_by_placeholder("Ask a question about orders, delivery, returns, payments…")
        box.fill("How long does standard delivery take?")
        box.press("Enter")

    with streamlit_browser(HUB_SCRIPT, env={"VERTICORE_HOME": str(cs_home)}, timeout=180) as browser:
        png = browser.screenshot(SCREENSHOTS / "customer_service_chat.png", ["Support chat", "Try:"],
                                 url_path=hub_page_url_path("customer_service", "chat_page.py"), actions=ask,
                                 after_actions_text=["3 to 5 business days", "Sources (", "confidence"])
    assert png.exists() and png.stat().st_size > 10_000
