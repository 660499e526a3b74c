"""Hub login and roles (``verticore.dashboard.auth``): when a login is asked, the users file and CLI,
and what viewer / agent / admin may do on the pages (AppTest), plus one real login in headless Chromium."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest
from typer.testing import CliRunner

from verticore.cli import app as cli_app
from verticore.dashboard import CORE_PAGE, HUB_SCRIPT, auth
from verticore.errors import DataError

SAMPLES = Path(__file__).resolve().parents[1] / "apps" / "customer_service" / "samples"
USAGE_PAGE = str(CORE_PAGE.with_name("usage_page.py"))
PASSWORDS = {"vic": "viewer-pass-1", "ada": "agent-pass-1", "root": "admin-pass-1"}


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("VERTICORE_HOME", str(tmp_path))
    monkeypatch.delenv(auth.USERS_ENV, raising=False)
    monkeypatch.delenv(auth.LOGIN_ENV, raising=False)
    return tmp_path


@pytest.fixture
def users(home) -> Path:
    """A users file with one user per role."""
    for (username, password), role in zip(PASSWORDS.items(), auth.ROLES):
        auth.add_user(username, password, role, name=username.title())
    return home / "dashboard_users.yaml"


def _as(at: AppTest, username: str) -> AppTest:
    """A session signed in as ``username`` (what the hub's login form leaves behind)."""
    at.session_state["authentication_status"] = True
    at.session_state["username"] = username
    return at


def _texts(at: AppTest) -> str:
    return "\n".join(str(e.value) for kind in ("title", "markdown", "caption", "error", "warning", "info", "success")
                     for e in getattr(at, kind))


# -- policy and users file -------------------------------------------------------------------------------
def test_login_policy_loopback_users_and_forced():
    assert all(auth.is_loopback(a) for a in ("127.0.0.1", "127.8.0.1", "::1", "[::1]", "localhost", None))
    assert not any(auth.is_loopback(a) for a in ("", "0.0.0.0", "::", "192.168.1.5", "example.org"))
    assert auth.login_policy("127.0.0.1", users_configured=False) == "open"  # make demo
    assert auth.login_policy("", users_configured=False) == "refuse"  # streamlit run hub.py: every interface
    assert auth.login_policy("0.0.0.0", users_configured=False) == "refuse"
    assert auth.login_policy("127.0.0.1", users_configured=False, forced=True) == "refuse"
    assert auth.login_policy("127.0.0.1", users_configured=True) == "login"
    assert auth.login_policy("0.0.0.0", users_configured=True) == "login"


def test_users_file_keeps_only_bcrypt_hashes_and_rejects_plain_passwords(home):
    path = home / "dashboard_users.yaml"
    user = auth.add_user("ann", "correct-horse", "agent", name="Ann")
    text = path.read_text()
    assert "correct-horse" not in text and user.password_hash.startswith("$2b$12$")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    loaded = auth.load_users()
    assert loaded.users["ann"].role == "agent" and loaded.cookie_key
    assert auth.check_password("correct-horse", loaded.users["ann"].password_hash)
    assert not auth.check_password("wrong-horse", loaded.users["ann"].password_hash)
    assert not auth.check_password("x" * 100, loaded.users["ann"].password_hash)  # over 72 bytes: no, not a crash
    with pytest.raises(DataError, match="already exists"):
        auth.add_user("ann", "another-pass", "admin")
    with pytest.raises(DataError, match="unknown role"):
        auth.add_user("bob", "another-pass", "root")
    with pytest.raises(DataError, match="too short"):
        auth.add_user("bob", "short", "viewer")
    path.write_text("users:\n  eve: {name: Eve, role: admin, password_hash: hunter22}\n")
    with pytest.raises(DataError, match="not a bcrypt hash"):
        auth.load_users()


def test_dashboard_users_cli_add_list_remove(home):
    runner = CliRunner()
    res = runner.invoke(cli_app, ["dashboard-users", "add", "ada", "--role", "agent", "--name", "Ada L",
                                  "--password-stdin"], input="agent-pass-1\n")
    assert res.exit_code == 0, res.output
    assert "agent-pass-1" not in (home / "dashboard_users.yaml").read_text()
    res = runner.invoke(cli_app, ["dashboard-users", "list", "--json"])
    assert res.exit_code == 0 and '"role": "agent"' in res.stdout and "$2b$" not in res.stdout
    res = runner.invoke(cli_app, ["dashboard-users", "add", "ada", "--role", "admin", "--password-stdin"],
                        input="agent-pass-2\n")
    assert res.exit_code != 0  # exists: needs --replace
    assert runner.invoke(cli_app, ["dashboard-users", "remove", "ada"]).exit_code == 0
    assert auth.load_users().users == {}


# -- the hub's front door ---------------------------------------------------------------------------------
def test_hub_on_loopback_without_users_needs_no_login(home):
    at = AppTest.from_file(str(HUB_SCRIPT), default_timeout=120).run()
    assert not at.exception
    assert not any(t.label == "Password" for t in at.text_input)
    assert "One shared fine-tuning" in _texts(at)
    assert any("no login, everyone is admin" in c.value for c in at.sidebar.caption)


def test_hub_refuses_everything_when_not_on_loopback_and_no_users(home, monkeypatch):
    monkeypatch.setattr(auth, "served_address", lambda: "0.0.0.0")
    at = AppTest.from_file(str(HUB_SCRIPT), default_timeout=120).run()
    assert not at.exception
    assert "no dashboard users are configured" in at.error[0].value
    assert "verticore dashboard-users add NAME --role admin" in at.error[0].value
    assert "One shared fine-tuning" not in _texts(at) and not at.text_input
    monkeypatch.undo()  # loopback again, but a login is required by configuration
    monkeypatch.setenv("VERTICORE_HOME", str(home))
    monkeypatch.setenv(auth.LOGIN_ENV, "required")
    at = AppTest.from_file(str(HUB_SCRIPT), default_timeout=120).run()
    assert "no dashboard users are configured" in at.error[0].value and "One shared fine-tuning" not in _texts(at)


def test_hub_login_form_wrong_then_right_password(users):
    at = AppTest.from_file(str(HUB_SCRIPT), default_timeout=120).run()
    assert not at.exception
    assert [t.label for t in at.text_input] == ["Username", "Password"]
    assert "One shared fine-tuning" not in _texts(at)  # nothing behind the form
    at.text_input[0].input("ada")
    at.text_input[1].input("not-the-password")
    at.button[0].click().run()
    assert "Wrong username or password." in [e.value for e in at.error]
    assert "One shared fine-tuning" not in _texts(at)
    at.text_input[1].input("x" * 100)  # over bcrypt's 72 bytes: refused, not a crash
    at.button[0].click().run()
    assert not at.exception and "Wrong username or password." in [e.value for e in at.error]
    at.text_input[0].input("ada")
    at.text_input[1].input(PASSWORDS["ada"])
    at.button[0].click().run()
    assert not at.exception
    assert "One shared fine-tuning" in _texts(at)
    assert any("Signed in as **Ada** (agent)" in c.value for c in at.sidebar.caption)
    at.sidebar.button(key="verticore_logout").click().run()
    assert "You are logged out." in [s.value for s in at.success]
    at.run()
    assert [t.label for t in at.text_input] == ["Username", "Password"] and "One shared fine-tuning" not in _texts(at)


# -- roles on the pages -------------------------------------------------------------------------------------
@pytest.fixture
def ticket(users, tmp_path, monkeypatch):
    """A customer-service bot directory with one open handoff ticket: (ticket id, session id, kb dir)."""
    from customer_service.store import BotStore

    kb = tmp_path / "kb"
    kb.mkdir()
    (kb / "kb.json").write_text("{}")
    (kb / "templates.yaml").write_text((SAMPLES / "templates.yaml").read_text())
    (kb / "bot.json").write_text('{"templates": "templates.yaml"}')
    monkeypatch.setenv("CUSTOMER_SERVICE_KB", str(kb))
    store = BotStore(kb / "bot.sqlite")
    sid = store.new_session()
    tid = store.open_ticket(sid, "human_requested", "human_requested: where is my parcel?",
                            pending=[{"role": "customer", "text": "where is my parcel?"}])
    store.close()
    return tid, sid, kb


def _handoff_page() -> str:
    from customer_service.plugin import APP as CS_APP

    PAGES = [{"title": p.title, "path": str(CS_APP.page_file(p))} for p in CS_APP.pages]

    return next(p["path"] for p in PAGES if p["title"] == "Handoff queue")


def test_handoff_viewer_reads_agent_replies_and_handler_rechecks_role(ticket, users):
    from customer_service.store import BotStore

    tid, sid, kb = ticket
    page = _handoff_page()
    at = AppTest.from_file(page, default_timeout=60).run()  # users configured, nobody signed in
    assert "Sign in through the Verticore hub" in at.warning[0].value and not at.expander

    at = _as(AppTest.from_file(page, default_timeout=60), "vic").run()
    assert not at.exception and at.expander  # the viewer sees the queue ...
    assert not at.text_area and not at.button  # ... but no reply box, claim or resolve
    assert any("needs the **agent** role" in c.value for c in at.caption)

    at = _as(AppTest.from_file(page, default_timeout=60), "ada").run()
    assert at.text_input(key="agent_name").value == "Ada"
    at.segmented_control[0].set_value("all").run()  # a reply claims the ticket: keep it on screen
    at.text_area(key=f"reply_{tid}").input("It left our warehouse today.").run()
    at.button(key=f"send_{tid}").click().run()
    assert not at.exception and "Reply sent" in at.success[0].value
    assert BotStore(kb / "bot.sqlite").messages(sid)[-1]["text"] == "It left our warehouse today."

    # Demoted while the page is open: the button is still on screen, the handler refuses.
    auth.add_user("ada", PASSWORDS["ada"], "viewer", name="Ada", replace=True)
    at.text_area(key=f"reply_{tid}").input("second reply")
    at.button(key=f"send_{tid}").click().run()
    assert "needs the agent role" in at.error[0].value
    assert [m["text"] for m in BotStore(kb / "bot.sqlite").messages(sid)].count("second reply") == 0


def test_usage_page_key_management_is_admin_only(users, home):
    from verticore.serving.keys import KeyStore, default_keys_db

    for who in ("vic", "ada"):
        at = _as(AppTest.from_file(USAGE_PAGE, default_timeout=60), who).run()
        assert not at.exception and "No usage recorded" in at.info[0].value  # usage itself: everyone
        assert not at.text_input and not at.button and not at.get("form")
        assert any("Managing API keys needs the **admin** role" in c.value for c in at.caption)

    at = _as(AppTest.from_file(USAGE_PAGE, default_timeout=60), "root").run()
    assert not at.exception and "No API keys yet." in [c.value for c in at.caption]
    at.text_input(key="key_name").input("shop")
    at.multiselect(key="key_scopes").set_value(["classify", "embed"])
    at.text_input(key="key_rate").input("20/s")
    at.button[0].click().run()  # the form's "Create key"
    assert not at.exception and "Copy it now" in at.success[0].value
    plaintext = at.code[0].value
    assert plaintext.startswith("vk_")
    store = KeyStore(default_keys_db(home))
    assert store.verify(plaintext).name == "shop" and store.get("shop").rate == "20/s"
    store.close()
    assert plaintext.encode() not in default_keys_db(home).read_bytes()  # stored hashed
    at.run()
    assert not at.code  # shown once
    assert at.dataframe[0].value["name"].tolist() == ["shop"]

    at.button(key="key_revoke").click().run()
    assert "Revoked key 'shop'" in at.success[0].value
    store = KeyStore(default_keys_db(home))
    assert store.verify(plaintext) is None
    store.close()

    auth.add_user("root", PASSWORDS["root"], "agent", replace=True)  # demoted with the form on screen
    at.text_input(key="key_name").input("sneaky")
    at.multiselect(key="key_scopes").set_value(["admin"])
    at.button[0].click().run()
    assert "managing API keys needs the admin role; you are agent" in at.error[0].value
    store = KeyStore(default_keys_db(home))
    assert store.get("sneaky") is None
    store.close()


def test_monitor_rules_editing_is_admin_only(users, monkeypatch):
    """The rules file (it may hold webhook secrets) and the watchlist editor: admins only."""
    from finance_sentiment.paths import AppPaths
    from finance_sentiment.store import SQLiteStore

    paths = AppPaths.default()
    paths.root.mkdir(parents=True, exist_ok=True)
    SQLiteStore(paths.db).close()
    page = str(Path(__file__).resolve().parents[1] / "apps" / "finance_sentiment" / "dashboard" / "monitor_page.py")
    at = _as(AppTest.from_file(page, default_timeout=120), "ada").run()
    assert not at.exception
    assert not [t for t in at.text_area if t.key == "rules_text"]
    assert at.button(key="wl_save").disabled
    assert any("Only admins see the rules file" in c.value for c in at.caption)
    at = _as(AppTest.from_file(page, default_timeout=120), "root").run()
    assert not at.exception and at.text_area(key="rules_text").value and not at.button(key="wl_save").disabled


# -- a real login in headless Chromium --------------------------------------------------------------------
@pytest.mark.browser
def test_hub_login_in_chromium(users, home):
    from streamlit_harness import SCREENSHOTS, require_chromium, streamlit_browser

    require_chromium()

    def sign_in(page) -> None:
        page.get_by_role("textbox", name="Username").fill("root")
        page.get_by_role("textbox", name="Password").fill(PASSWORDS["root"])
        page.get_by_role("button", name="Sign in").click()

    with streamlit_browser(HUB_SCRIPT, env={"VERTICORE_HOME": str(home)}, timeout=120) as browser:
        form_png = browser.screenshot(SCREENSHOTS / "hub_login_form.png", ["Sign in", "Username", "Password"])
        assert browser.page.get_by_text("One shared fine-tuning").count() == 0  # nothing behind the form
        png = browser.screenshot(SCREENSHOTS / "hub_login.png", ["Sign in", "Username", "Password"],
                                 actions=sign_in, after_actions_text=["Signed in as", "One shared fine-tuning"])
        assert browser.page.get_by_role("button", name="Log out").is_visible()
        browser.page.goto(browser.url(""), wait_until="domcontentloaded")  # a reload: the cookie signs back in
        browser.page.get_by_text("Signed in as").first.wait_for(state="visible")
    assert png.stat().st_size > 20_000 and form_png.stat().st_size > 5_000


@pytest.mark.browser
def test_real_server_on_every_interface_without_users_shows_only_the_refusal(home):
    """The real ``served_address()`` branch: ``streamlit run hub.py --server.address 0.0.0.0`` with no users."""
    import signal
    import subprocess
    import sys

    from playwright.sync_api import sync_playwright
    from streamlit_harness import CHROMIUM_ARGS, _server_env, _wait_health, chromium_path, free_port, require_chromium

    require_chromium()
    port = free_port()
    cmd = [sys.executable, "-m", "streamlit", "run", str(HUB_SCRIPT), "--server.headless", "true", "--server.port",
           str(port), "--server.address", "0.0.0.0", "--browser.gatherUsageStats", "false",
           "--server.fileWatcherType", "none"]
    proc = subprocess.Popen(cmd, env=_server_env({"VERTICORE_HOME": str(home)}), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_health(url, proc, 90)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium_path() or "/usr/bin/chromium", args=CHROMIUM_ARGS)
            try:
                page = browser.new_page()
                page.goto(url, wait_until="domcontentloaded")
                page.wait_for_timeout(1500)  # the first load of a fresh server renders blank in headless chromium
                page.goto(url, wait_until="domcontentloaded")
                page.get_by_text("served on 0.0.0.0 and no dashboard users are configured").first.wait_for(timeout=90_000)
                assert page.get_by_text("One shared fine-tuning").count() == 0
                assert page.locator('[data-testid="stSidebarNav"]').count() == 0
            finally:
                browser.close()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
