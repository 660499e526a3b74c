"""The embeddable support chat widget in headless Chromium against a real server with API keys.

A customer asks a question in the widget and sees the answer with its citation, asks for a human
and sees "connecting you to an agent"; an agent answers through the API with an agent key, and
the reply appears in the widget by polling. Screenshot: tests/_screenshots/support_widget.png.
"""
import threading
import time
from pathlib import Path

import httpx
import pytest
from streamlit_harness import CHROMIUM_ARGS, SCREENSHOTS, chromium_path, free_port, require_chromium
from test_support_api import ScriptedIntents

from customer_service.api import create_app
from customer_service.bot import Bot
from customer_service.kb import KnowledgeBase
from customer_service.store import BotStore
from customer_service.templates import TemplateSet
from verticore.serving import KeyStore, ServingSettings

SAMPLES = Path(__file__).resolve().parents[1] / "apps" / "customer_service" / "samples"


class ServerThread:
    """uvicorn serving ``app`` on 127.0.0.1 in a background thread (stopped on exit)."""

    def __init__(self, app) -> None:
        import uvicorn

        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    log_config=None))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the support server did not start")
            time.sleep(0.05)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


@pytest.mark.browser
def test_widget_chat_handoff_and_agent_reply_in_chromium(tmp_path, default_embedder):
    require_chromium()
    from playwright.sync_api import expect, sync_playwright

    kb = KnowledgeBase(tmp_path / "kb", embedder=default_embedder)
    kb.ingest_dir(SAMPLES / "kb", show_progress=False)
    bot = Bot(kb, ScriptedIntents(), TemplateSet.load(SAMPLES / "templates.yaml"), store=BotStore(tmp_path / "kb" / "bot.sqlite"))
    ks = KeyStore(tmp_path / "keys.db")
    chat_key = ks.create("website-widget", ["support:chat"], rate="20/s")[0]
    agent_key = ks.create("alice", ["support:agent"])[0]
    ks.close()
    app = create_app(bot, ServingSettings(keys_db=tmp_path / "keys.db", usage_db=tmp_path / "usage.db", access_log=False))

    with ServerThread(app) as base, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path() or "/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 420, "height": 760})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"{base}/v1/support/widget#key={chat_key}")
            box = page.locator("#vc-input")
            box.fill("How long does standard delivery take?")
            box.press("Enter")
            answer = page.locator(".vc-bot").first
            expect(answer).to_contain_text("3 to 5 business days", timeout=30_000)
            expect(answer.locator(".vc-cite").first).to_contain_text("shipping.md")
            expect(page.locator("#vc-banner")).to_be_hidden()

            box.fill("I want to talk to a human <b>now</b>")
            box.press("Enter")
            expect(page.locator("#vc-banner")).to_contain_text("Connecting you to an agent", timeout=30_000)
            expect(page.locator(".vc-bot").last).to_contain_text("ticket T-")
            # customer text is shown literally, never parsed as HTML
            expect(page.locator(".vc-customer").last).to_contain_text("<b>now</b>")
            assert page.locator(".vc-log b").count() == 0

            agent = {"Authorization": f"Bearer {agent_key}"}
            tickets = httpx.get(f"{base}/v1/support/tickets?status=open", headers=agent).json()["tickets"]
            assert len(tickets) == 1 and tickets[0]["reason"] == "human_requested"
            r = httpx.post(f"{base}/v1/support/tickets/{tickets[0]['ticket_id']}/reply", headers=agent,
                           json={"agent": "Alice", "text": "Hi, I'm Alice from Lumen Home. How can I help with your order?"})
            assert r.status_code == 200, r.text
            reply = page.locator(".vc-agent-msg")
            expect(reply).to_contain_text("I'm Alice from Lumen Home", timeout=15_000)  # arrives by polling
            expect(reply).to_contain_text("Alice (support team)")
            expect(page.locator("#vc-banner")).to_contain_text("You're chatting with Alice")
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            png = SCREENSHOTS / "support_widget.png"
            page.screenshot(path=str(png), full_page=True)
            assert png.stat().st_size > 10_000 and not errors, errors

            # a page without a key says so instead of failing silently
            page.goto(f"{base}/v1/support/widget")
            expect(page.locator("#vc-error")).to_contain_text("needs a public chat key")
            expect(page.locator("#vc-input")).to_be_disabled()
        finally:
            browser.close()
    bot.store.close()
