"""The hub in a real headless Chromium: Home and Core pages render, classify and embed, no exceptions.

Screenshots: tests/_screenshots/hub_home.png and tests/_screenshots/hub_core.png.
"""
from __future__ import annotations

import pytest
from streamlit_harness import HUB_SCRIPT, SCREENSHOTS, prepared_demo_home, require_chromium, streamlit_browser

from verticore.dashboard import CORE_URL_PATH

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="session")
def demo_home(tmp_path_factory):
    return prepared_demo_home(tmp_path_factory, only=("core",))


def test_hub_home_and_core_pages_in_chromium(demo_home):
    require_chromium()
    env = {"VERTICORE_HOME": str(demo_home)}

    def classify_and_embed(page) -> None:
        page.get_by_role("button", name="Classify").click()
        page.get_by_text("Chunks used").first.wait_for(state="visible")
        page.get_by_role("button", name="Embed").click()

    with streamlit_browser(HUB_SCRIPT, env=env, timeout=120) as browser:
        home_png = browser.screenshot(
            SCREENSHOTS / "hub_home.png",
            ["One shared fine-tuning and inference core", "Customer service", "Finance sentiment", "Recommender",
             "demo classifier ready", "Open Core: models"])
        core_png = browser.screenshot(
            SCREENSHOTS / "hub_core.png",
            ["Classify a text", "Embed a text", "Device in use", "Classifier model"],
            url_path=CORE_URL_PATH,
            actions=classify_and_embed,
            after_actions_text=["Chunks used", "Calibrated probabilities", "Dimension", "384", "Cosine similarity"])
        # The navigation lists the Core page and the sidebar link leads to it.
        browser.open("", ["Verticore"])
        browser.page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name="Core: models").click()
        browser.page.get_by_text("Classify a text").first.wait_for(state="visible")
        assert browser.page.url.rstrip("/").endswith("/core")
    for png in (home_png, core_png):
        assert png.stat().st_size > 20_000  # a real rendering, not a blank page
