"""Drive a real Streamlit server with headless Debian Chromium (playwright) and take screenshots.

Usage in a test::

    from streamlit_harness import SCREENSHOTS, require_chromium, screenshot_streamlit, hub_page_url_path

    @pytest.mark.browser
    def test_my_page(tmp_path):
        require_chromium()                      # skip locally without chromium, FAIL under CI=1
        screenshot_streamlit(HUB, SCREENSHOTS / "my_page.png", ["My title"],
                             env={"VERTICORE_HOME": str(home)},
                             url_path=hub_page_url_path("finance_sentiment", "monitor.py"))

Notes: the first load of a freshly started server renders blank in headless Chromium, so the
page is loaded, then reloaded, then we wait for every expected text and check that no Streamlit
exception block (``[data-testid="stException"]``) is on the page. The server is always killed.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Sequence

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOTS = Path(__file__).resolve().parent / "_screenshots"
HUB_SCRIPT = ROOT / "shared" / "verticore" / "dashboard" / "hub.py"
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


class StreamlitPageError(AssertionError):
    """The page showed a Streamlit exception, never showed an expected text, or the server died."""


def chromium_path() -> str | None:
    """Path of the Debian chromium binary, or None."""
    found = shutil.which("chromium")
    if found:
        return found
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None


def chromium_available() -> bool:
    """True when chromium and the playwright python package are both installed."""
    if chromium_path() is None:
        return False
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return False
    return True


def require_chromium() -> None:
    """Skip the calling test when chromium/playwright are missing -- but FAIL when env CI is set.

    CI must really run the browser tests (``make test`` installs chromium via ``make browser-deps``).
    """
    import pytest

    if chromium_available():
        return
    msg = "headless chromium + playwright are needed for browser tests (run `make browser-deps`)"
    if os.environ.get("CI", "").strip().lower() not in {"", "0", "false", "no"}:
        pytest.fail(f"CI is set but {msg}")
    pytest.skip(msg)


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def hub_page_url_path(app: str, page_file: str, url_path: str | None = None) -> str:
    """URL path of an app page inside the hub (what ``verticore.dashboard.page_url_path`` gives).

    ``page_file`` is the page script's file name (e.g. ``"monitor.py"``); pass ``url_path`` when the
    app's ``PAGES`` entry sets one explicitly. The Core page is ``"core"``; Home is ``""``.
    """
    from verticore.dashboard import page_url_path

    page: dict[str, str] = {"path": page_file}
    if url_path:
        page["url_path"] = url_path
    return page_url_path(app, page)


def _server_env(env: dict[str, str] | None) -> dict[str, str]:
    out = dict(os.environ)
    out.update({"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
                "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false"})
    paths = [str(ROOT / "shared"), str(ROOT / "apps")]
    if out.get("PYTHONPATH"):
        paths.append(out["PYTHONPATH"])
    out["PYTHONPATH"] = os.pathsep.join(paths)
    out.update(env or {})
    return out


def _wait_health(base_url: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise StreamlitPageError(f"streamlit exited early with code {proc.returncode}")
        try:
            with urllib.request.urlopen(base_url + "/_stcore/health", timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.25)
    raise StreamlitPageError(f"streamlit did not become healthy within {timeout:.0f} s")


def _tail(path: Path, n: int = 4000) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")[-n:]
    except OSError:
        return ""


@contextmanager
def streamlit_server(script_path: str | os.PathLike, env: dict[str, str] | None = None,
                     timeout: float = 90) -> Iterator[str]:
    """Start ``streamlit run SCRIPT`` headless on a free port; yields the base URL; always kills it."""
    script = Path(script_path).resolve()
    if not script.is_file():
        raise FileNotFoundError(f"streamlit script not found: {script}")
    port = free_port()
    cmd = [sys.executable, "-m", "streamlit", "run", str(script), "--server.headless", "true",
           "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
           "--server.fileWatcherType", "none", "--client.toolbarMode", "minimal"]
    log = Path(tempfile.mkstemp(prefix="streamlit-", suffix=".log")[1])
    with open(log, "wb") as log_fh:
        proc = subprocess.Popen(cmd, env=_server_env(env), stdout=log_fh, stderr=subprocess.STDOUT,
                                cwd=str(ROOT), start_new_session=True)
    base_url = f"http://127.0.0.1:{port}"
    try:
        try:
            _wait_health(base_url, proc, timeout)
        except StreamlitPageError as exc:
            raise StreamlitPageError(f"{exc}\n--- server log ---\n{_tail(log)}") from None
        yield base_url
    finally:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.unlink(missing_ok=True)


def _wait_rendered(page, expect_text: Sequence[str], timeout_ms: int) -> None:
    """Wait for every expected text, then for the script run to finish; fail on an exception block."""
    for text in expect_text:
        try:
            page.get_by_text(text).first.wait_for(state="visible", timeout=timeout_ms)
        except Exception:
            exc_text = _exception_text(page)
            if exc_text:
                raise StreamlitPageError(f"the page raised an exception: {exc_text}") from None
            raise StreamlitPageError(f"text {text!r} did not appear within {timeout_ms / 1000:.0f} s") from None
    _wait_idle(page, timeout_ms)
    exc_text = _exception_text(page)
    if exc_text:
        raise StreamlitPageError(f"the page raised an exception: {exc_text}")


def _wait_idle(page, timeout_ms: int) -> None:
    """Wait until Streamlit's status widget says the script is no longer running."""
    try:
        page.wait_for_function(
            "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')"
            " || !/Running|Connecting/i.test(document.querySelector('[data-testid=\"stStatusWidget\"]').innerText)",
            timeout=timeout_ms)
    except Exception:
        pass
    page.wait_for_timeout(700)  # let charts/fonts settle before the screenshot


def _exception_text(page) -> str:
    blocks = page.locator('[data-testid="stException"]')
    if blocks.count() == 0:
        return ""
    try:
        return blocks.first.inner_text(timeout=2000)[:2000]
    except Exception:
        return "(exception block present)"


class StreamlitBrowser:
    """A headless Chromium page on a running Streamlit server (see :func:`streamlit_browser`)."""

    def __init__(self, base_url: str, page, timeout_ms: int) -> None:
        self.base_url = base_url
        self.page = page
        self.timeout_ms = timeout_ms
        self._warmed = False

    def url(self, url_path: str = "") -> str:
        return f"{self.base_url}/{url_path.strip('/')}" if url_path else self.base_url + "/"

    def open(self, url_path: str, expect_text: Sequence[str]) -> None:
        """Load a page (``url_path`` of a multipage page, "" for the default) and wait for the texts."""
        url = self.url(url_path)
        if not self._warmed:
            # The first load of a fresh server renders blank in headless chromium: load, then load again.
            self.page.goto(url, wait_until="domcontentloaded")
            self.page.wait_for_timeout(1500)
            self._warmed = True
        self.page.goto(url, wait_until="domcontentloaded")
        _wait_rendered(self.page, expect_text, self.timeout_ms)

    def screenshot(self, out_png: str | os.PathLike, expect_text: Sequence[str], url_path: str = "",
                   actions: Callable[..., None] | None = None, after_actions_text: Sequence[str] = ()) -> Path:
        """Open ``url_path``, wait for ``expect_text``, run ``actions(page)``, wait for
        ``after_actions_text``, check for exceptions, save a full-page PNG."""
        out = Path(out_png)
        out.parent.mkdir(parents=True, exist_ok=True)
        self.open(url_path, expect_text)
        if actions is not None:
            actions(self.page)
            _wait_rendered(self.page, list(after_actions_text), self.timeout_ms)
        self.page.screenshot(path=str(out), full_page=True)
        return out


@contextmanager
def streamlit_browser(script_path: str | os.PathLike, env: dict[str, str] | None = None, timeout: float = 90,
                      viewport: tuple[int, int] = (1400, 1000)) -> Iterator[StreamlitBrowser]:
    """Serve ``script_path`` and open headless Chromium on it: take several screenshots with one server.

    ``timeout`` bounds the server start and each wait for a text. Server and browser always stop.
    """
    from playwright.sync_api import sync_playwright

    timeout_ms = int(timeout * 1000)
    with streamlit_server(script_path, env=env, timeout=timeout) as base_url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path() or "/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
            page.set_default_timeout(timeout_ms)
            yield StreamlitBrowser(base_url, page, timeout_ms)
        finally:
            browser.close()


def screenshot_streamlit(script_path: str | os.PathLike, out_png: str | os.PathLike, expect_text: list[str],
                         env: dict[str, str] | None = None, timeout: float = 90, url_path: str = "",
                         actions: Callable[..., None] | None = None, after_actions_text: Sequence[str] = (),
                         viewport: tuple[int, int] = (1400, 1000)) -> Path:
    """Serve ``script_path`` with Streamlit, open it in headless Chromium and save a full-page screenshot.

    Args:
        script_path: the Streamlit script (the hub, or a page script on its own).
        out_png: where to save the PNG (parents created); usually ``SCREENSHOTS / "name.png"``.
        expect_text: texts that must all be visible before the screenshot.
        env: extra environment for the server (``HF_HUB_OFFLINE=1`` and ``PYTHONPATH`` are set).
        timeout: seconds for the server to become healthy and for each text to appear.
        url_path: a multipage page's url path, e.g. ``"core"`` (see :func:`hub_page_url_path`).
        actions: optional ``f(page)`` (a playwright Page) run after the texts appeared: click, type...
        after_actions_text: texts that must be visible after ``actions`` (before the screenshot).
        viewport: browser window size.

    Raises :class:`StreamlitPageError` when a text never shows, the page shows a Streamlit
    exception, or the server dies. Returns the PNG path.
    """
    with streamlit_browser(script_path, env=env, timeout=timeout, viewport=viewport) as browser:
        return browser.screenshot(out_png, expect_text, url_path=url_path, actions=actions,
                                  after_actions_text=after_actions_text)


_PREPARED: dict[tuple[str, ...], Path] = {}


def prepared_demo_home(tmp_path_factory, only: Sequence[str] = ("core",)) -> Path:
    """A VERTICORE_HOME prepared once per test session by ``verticore.demo`` in fast mode.

    ``only`` picks the parts (``core``, ``customer_service``, ``finance_sentiment``, ``recommender``).
    Call it from a session fixture; repeated calls (other test modules) reuse the same folder.
    """
    key = tuple(sorted(only))
    if key not in _PREPARED:
        import pytest

        from verticore import demo

        base = tmp_path_factory.mktemp("verticore_home_" + "_".join(key))
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("VERTICORE_HOME", str(base))
            mp.setenv(demo.FAST_ENV, "1")
            rc = demo.main(["--prepare-only", "--only", ",".join(key), "--quiet"])
        if rc != 0:
            raise AssertionError(f"verticore.demo --prepare-only --only {','.join(key)} failed (exit {rc})")
        _PREPARED[key] = base
    return _PREPARED[key]


__all__ = ["CHROMIUM_ARGS", "HUB_SCRIPT", "ROOT", "SCREENSHOTS", "StreamlitBrowser", "StreamlitPageError",
           "chromium_available", "chromium_path", "free_port", "hub_page_url_path", "prepared_demo_home",
           "require_chromium", "screenshot_streamlit", "streamlit_browser", "streamlit_server"]
