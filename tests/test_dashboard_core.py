"""The Streamlit hub, the Core page and ``python -m verticore.demo`` (AppTest, no browser)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from app_dist import forget_modules, install_app
from streamlit.testing.v1 import AppTest
from streamlit_harness import prepared_demo_home

import verticore.dashboard as dashboard
from verticore import demo
from verticore.dashboard import CORE_PAGE, HUB_SCRIPT, discover_pages, find_artifacts, home, hub_apps

ROOT = Path(__file__).resolve().parents[1]
RUN_TIMEOUT = 240  # seconds; generous because CI machines may be shared and slow


@pytest.fixture(scope="session")
def demo_home(tmp_path_factory) -> Path:
    """A VERTICORE_HOME prepared by ``verticore.demo --prepare-only --only core`` in fast mode.

    This trains the core demo classifier with ``train_classifier`` (2 steps): the AppTests below
    classify with it.
    """
    return prepared_demo_home(tmp_path_factory, only=("core",))


def _write_fake_apps(root: Path) -> dict[str, Path]:
    """Fake apps registered through entry points: one good, one whose plugin raises, one whose demo
    fails, one whose package is not installed."""
    good = install_app(root, "vc_fake_good", {
        "dashboard/__init__.py": "",
        "dashboard/fake_page.py": "import streamlit as st\nst.header('Fake page works')\n",
        "demo.py": """
            from pathlib import Path

            def prepare_demo(home: Path, *, fast: bool = False, show_progress: bool = True) -> None:
                (home / "vc_fake_good").mkdir(parents=True, exist_ok=True)
                (home / "vc_fake_good" / "ready.flag").write_text("ok")

            def is_ready(home: Path) -> bool:
                return (home / "vc_fake_good" / "ready.flag").exists()
        """,
        "plugin.py": """
            from verticore.plugins import AppSpec, DashboardPage

            APP = AppSpec(name="vc_fake_good", title="Fake good", summary="A fake app.", icon=":material/star:",
                          pages=[DashboardPage("Fake page", "dashboard/fake_page.py", icon=":material/star:"),
                                 DashboardPage("Gone", "dashboard/missing.py")],
                          prepare_demo="vc_fake_good.demo:prepare_demo", demo_ready="vc_fake_good.demo:is_ready")
        """,
    })
    install_app(root, "vc_fake_broken", {"plugin.py": "raise RuntimeError('boom in plugin')\n"})
    install_app(root, "vc_fake_faildemo", {"plugin.py": """
        from verticore.plugins import AppSpec

        def fail(home, *, fast, show_progress):
            raise ValueError("sample data missing")

        APP = AppSpec(name="vc_fake_faildemo", title="Fake failing demo", prepare_demo=fail)
    """})
    install_app(root, "vc_fake_absent", {"plugin.py": """
        from verticore.plugins import AppSpec, DashboardPage

        APP = AppSpec(name="vc_fake_absent", title="Fake absent", package="vc_fake_not_installed",
                      pages=[DashboardPage("Nowhere", "dashboard/nowhere.py")])
    """})
    return {"page": good / "dashboard" / "fake_page.py"}


@pytest.fixture
def fake_apps(tmp_path, monkeypatch):
    paths = _write_fake_apps(tmp_path / "site")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    yield paths
    forget_modules("vc_fake")


# -- verticore.dashboard ------------------------------------------------------------------------
def test_home_follows_env_and_defaults_to_repo(monkeypatch, tmp_path):
    monkeypatch.setenv("VERTICORE_HOME", str(tmp_path / "h"))
    assert home() == tmp_path / "h"
    monkeypatch.delenv("VERTICORE_HOME")
    assert home() == ROOT / ".verticore"
    assert dashboard.repo_root() == ROOT


def test_discover_pages_isolates_broken_apps(fake_apps):
    found = hub_apps()
    apps = {e.app.name: e for e in found.apps}
    good = apps["vc_fake_good"]
    assert [p["title"] for p in good.pages] == ["Fake page"]
    assert good.pages[0]["url_path"] == "vc-fake-good-fake-page"
    assert any("missing.py" in w for w in good.warnings)
    assert any("vc_fake_broken" in p and "boom in plugin" in p for p in found.problems)
    assert "vc_fake_broken" not in apps
    assert not apps["vc_fake_absent"].installed and not apps["vc_fake_absent"].broken
    assert apps["vc_fake_faildemo"].error and not apps["vc_fake_faildemo"].broken  # simply no pages
    assert {e.app.name for e in discover_pages()} == set(apps)


def test_find_artifacts_lists_the_demo_classifier(demo_home):
    (demo_home / "core" / ".demo_classifier.x.staging").mkdir(exist_ok=True)  # a running training: ignored
    arts = find_artifacts(demo_home)
    assert arts["classifier"] == [demo_home / "core" / "demo_classifier"]


def test_demo_ready_uses_the_app_hook_or_the_folder(fake_apps, tmp_path):
    base = tmp_path / "home"
    (base / "vc_fake_good").mkdir(parents=True)
    (base / "vc_fake_good" / "partial.tmp").write_text("")  # folder not empty, but the hook says no
    assert not dashboard.demo_ready("vc_fake_good", base)
    (base / "vc_fake_good" / "ready.flag").write_text("ok")
    assert dashboard.demo_ready("vc_fake_good", base)
    assert not dashboard.demo_ready("vc_fake_absent", base)  # no hook: folder check
    (base / "vc_fake_absent").mkdir()
    (base / "vc_fake_absent" / "state.json").write_text("{}")
    assert dashboard.demo_ready("vc_fake_absent", base)


def test_prepare_all_runs_app_hooks_and_survives_failures(fake_apps, tmp_path):
    from verticore.demo import prepare_all

    results = {r.name: r for r in prepare_all(tmp_path, only=["vc_fake_good", "vc_fake_faildemo", "vc_fake_absent"],
                                                show_progress=False)}
    assert results["vc_fake_good"].status == "prepared" and (tmp_path / "vc_fake_good" / "ready.flag").exists()
    assert results["vc_fake_faildemo"].status == "failed" and "sample data missing" in results["vc_fake_faildemo"].detail
    assert results["vc_fake_absent"].status == "skipped"  # an app without a demo


# -- python -m verticore.demo -------------------------------------------------------------------
def test_demo_prepare_only_trains_once_then_is_idempotent(demo_home):
    clf_dir = demo_home / "core" / "demo_classifier"
    from verticore.inference import TextClassifier

    assert TextClassifier(str(clf_dir)).labels == ["negative", "neutral", "positive"]
    before = {p.name: p.stat().st_mtime_ns for p in clf_dir.iterdir()}
    env = {**os.environ, "VERTICORE_HOME": str(demo_home), demo.FAST_ENV: "1", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "shared"), str(ROOT / "apps")])}
    proc = subprocess.run([sys.executable, "-m", "verticore.demo", "--prepare-only", "--only", "core", "--quiet"],
                          env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "core: ready" in proc.stdout and "already at" in proc.stdout
    assert {p.name: p.stat().st_mtime_ns for p in clf_dir.iterdir()} == before


def test_demo_rejects_unknown_parts_and_ports(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("VERTICORE_HOME", str(tmp_path))
    assert demo.main(["--prepare-only", "--only", "nope"]) == 2
    assert "unknown demo part" in capsys.readouterr().err
    monkeypatch.setenv("VERTICORE_PORT", "eighty")
    assert demo.main(["--no-prepare"]) == 2
    monkeypatch.delenv("VERTICORE_PORT")
    import socket

    with socket.socket() as busy:  # a taken port: a clear message, no streamlit started
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert demo.main(["--no-prepare", "--no-browser", "--port", str(port)]) == 2
    assert "already in use" in capsys.readouterr().err


def test_demo_skips_apps_that_are_not_installed(monkeypatch, tmp_path):
    res = demo.prepare_app("vc_no_such_app_pkg", tmp_path, show_progress=False)
    assert res.status == "skipped" and "not an installed app" in res.detail


def test_hub_command_is_headless_on_requested_port():
    cmd = demo.hub_command("127.0.0.1", 8765)
    assert cmd[1:4] == ["-m", "streamlit", "run"] and cmd[4] == str(HUB_SCRIPT)
    assert cmd[cmd.index("--server.port") + 1] == "8765" and cmd[cmd.index("--server.headless") + 1] == "true"


# -- the hub ------------------------------------------------------------------------------------
def test_hub_runs_and_survives_broken_app_pages(fake_apps, demo_home, monkeypatch):
    monkeypatch.setenv("VERTICORE_HOME", str(demo_home))
    at = AppTest.from_file(str(HUB_SCRIPT), default_timeout=RUN_TIMEOUT).run()
    assert not at.exception
    assert at.title[0].value == "Verticore"
    warnings = " ".join(w.value for w in at.sidebar.warning)
    assert "boom in plugin" in warnings and "missing.py" in warnings
    text = " ".join(m.value for m in at.markdown)
    assert "A fake app." in text
    at.switch_page(str(fake_apps["page"])).run()
    assert not at.exception
    assert at.header[0].value == "Fake page works"


def test_hub_home_page_lists_the_real_apps(demo_home, monkeypatch):
    monkeypatch.setenv("VERTICORE_HOME", str(demo_home))
    at = AppTest.from_file(str(HUB_SCRIPT), default_timeout=RUN_TIMEOUT).run()
    assert not at.exception
    subheaders = [s.value for s in at.subheader]
    for title in ("Core: models", "Customer service", "Finance sentiment", "Recommender"):
        assert title in subheaders
    badges = [m.value for m in at.markdown if "-badge[" in m.value]
    assert any(":green-badge[" in b and "demo classifier ready" in b for b in badges)
    assert len(badges) == 4  # the core + one per app
    at.switch_page(str(CORE_PAGE)).run()  # the Core page is registered in the hub's navigation
    assert not at.exception and at.title[0].value == "Core: models"


# -- the Core page ------------------------------------------------------------------------------
def _core(demo_home: Path, monkeypatch) -> AppTest:
    monkeypatch.setenv("VERTICORE_HOME", str(demo_home))
    at = AppTest.from_file(str(CORE_PAGE), default_timeout=RUN_TIMEOUT).run()
    assert not at.exception
    assert at.title[0].value == "Core: models"
    return at


def _metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def test_core_page_classifies_and_embeds(demo_home, monkeypatch):
    at = _core(demo_home, monkeypatch)
    assert at.selectbox(key="core_clf_choice").value.startswith("Demo classifier")
    assert _metrics(at)["Device in use"] == "CPU" or _metrics(at)["Device in use"] in {"CUDA", "MPS"}
    at.text_area(key="core_clf_text").input("The refund never arrived and support ignores me.").run()
    at.button(key="core_clf_btn").click().run()
    assert not at.exception and not at.error
    m = _metrics(at)
    assert m["Label"] in {"negative", "neutral", "positive"}
    assert m["Chunks used"] == "1"
    assert len(at.get("vega_lite_chart")) == 1  # the probability bar chart

    at.button(key="core_emb_btn").click().run()
    assert not at.exception and not at.error
    m = _metrics(at)
    assert m["Dimension"] == "384"
    assert m["L2 norm"] == "1.0000"
    assert -1.0 <= float(m["Cosine similarity"]) <= 1.0
    assert m["Label"] in {"negative", "neutral", "positive"}  # the classification stays on screen


def test_core_page_bad_model_paths_and_empty_text_show_errors(demo_home, monkeypatch, tmp_path):
    at = _core(demo_home, monkeypatch)
    at.selectbox(key="core_clf_choice").select("Custom path…").run()
    at.text_input(key="core_clf_path").input(str(tmp_path / "no_such_model")).run()
    assert not at.exception
    assert any("not found" in e.value for e in at.error)
    assert at.button(key="core_clf_btn").disabled

    at.text_input(key="core_clf_path").input(str(dashboard.core_demo_classifier(demo_home) / "labels.json")).run()
    assert not at.exception and any("is a file" in e.value for e in at.error)

    at.selectbox(key="core_emb_choice").select("Custom path…").run()
    at.text_input(key="core_emb_path").input(str(tmp_path)).run()
    assert not at.exception and any("not a model directory" in e.value for e in at.error)

    at.selectbox(key="core_clf_choice").select(at.selectbox(key="core_clf_choice").options[0]).run()
    at.text_area(key="core_clf_text").input("   ").run()
    at.button(key="core_clf_btn").click().run()
    assert not at.exception
    assert any("Type a text to classify" in e.value for e in at.error)
