"""Apps plug into the core through the ``verticore.apps`` entry-point group.

A fourth, minimal app is installed into a temporary folder (package + ``*.dist-info``) and shows up
in the hub, the demo and the ``verticore`` command without any change to the core; and the core
itself names no app.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from app_dist import forget_modules, install_app
from streamlit.testing.v1 import AppTest

from verticore.dashboard import HUB_SCRIPT, hub_apps
from verticore.errors import DataError
from verticore.plugins import AppSpec, DashboardPage, discover_apps

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 240  # seconds: shared CI machines can be slow

FOURTH_APP = {
    "__init__.py": '''
        """A minimal fourth Verticore app, installed by the tests."""
        GREETING = "Hello from the fourth app"
    ''',
    "dashboard/__init__.py": "",
    # a page runs as a script: it imports its own package absolutely, with no sys.path edit
    "dashboard/fourth_page.py": '''
        import streamlit as st

        from my_fourth_app import GREETING

        st.header(GREETING)
    ''',
    "cli.py": '''
        import typer

        app = typer.Typer(no_args_is_help=True, help="The fourth app's command line.")


        @app.command()
        def hello(name: str = typer.Option("world", help="who to greet")) -> None:
            """Greet someone."""
            typer.echo(f"hello {name} from the fourth app")


        @app.command()
        def version() -> None:
            """Print the app's version."""
            typer.echo("0.1")
    ''',
    "demo.py": '''
        from pathlib import Path


        def prepare(home: Path, *, fast: bool, show_progress: bool) -> None:
            out = home / "my_fourth_app"
            out.mkdir(parents=True, exist_ok=True)
            (out / "state.json").write_text('{"fast": %s}' % str(fast).lower())


        def ready(home: Path) -> bool:
            return (home / "my_fourth_app" / "state.json").is_file()
    ''',
    "plugin.py": '''
        from verticore.plugins import AppSpec, DashboardPage

        APP = AppSpec(
            name="my_fourth_app",
            title="My fourth app",
            summary="A minimal app that plugs into Verticore.",
            icon=":material/star:",
            pages=[DashboardPage("Fourth page", "dashboard/fourth_page.py", icon=":material/star:")],
            cli="my_fourth_app.cli:app",
            prepare_demo="my_fourth_app.demo:prepare",
            demo_ready="my_fourth_app.demo:ready",
        )
    ''',
}


@pytest.fixture(scope="module")
def app_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fourth_app")
    install_app(root, "my_fourth_app", FOURTH_APP)
    return root


@pytest.fixture
def fourth_app(app_root, monkeypatch) -> Path:
    monkeypatch.syspath_prepend(str(app_root))
    yield app_root
    forget_modules("my_fourth_app")


def _env(app_root: Path, home: Path) -> dict[str, str]:
    env = {**os.environ, "VERTICORE_HOME": str(home), "VERTICORE_DEMO_FAST": "1", "HF_HUB_OFFLINE": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(app_root)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return env


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=TIMEOUT)


# -- discovery --------------------------------------------------------------------------------------
def test_the_fourth_app_is_discovered_with_its_pages(fourth_app):
    apps = discover_apps()
    assert {"my_fourth_app", "customer_service", "finance_sentiment", "recommender"} <= set(apps)
    spec = apps["my_fourth_app"]
    described = json.loads(json.dumps(spec.describe()))  # plain JSON: hooks are module:attribute text
    assert described["cli"] == "my_fourth_app.cli:app" and described["pages"][0]["path"] == "dashboard/fourth_page.py"
    entry = next(e for e in hub_apps().apps if e.app.name == "my_fourth_app")
    assert entry.installed and not entry.warnings
    assert entry.pages == [{"title": "Fourth page", "path": str(fourth_app / "my_fourth_app/dashboard/fourth_page.py"),
                            "icon": ":material/star:", "url_path": "my-fourth-app-fourth-page", "role": None}]


def test_app_spec_refuses_bad_declarations():
    with pytest.raises(DataError, match="Python identifier"):
        AppSpec(name="my-app", title="x")
    with pytest.raises(DataError, match="inside the app"):
        DashboardPage("Escape", "../elsewhere.py")
    with pytest.raises(DataError, match="DashboardPage"):
        AppSpec(name="my_app", title="x", pages=[{"title": "t", "path": "p.py"}])


def test_a_broken_app_is_reported_and_the_others_still_load(tmp_path, monkeypatch):
    install_app(tmp_path, "vc_broken_plugin", {"plugin.py": "raise RuntimeError('boom in plugin')\n"})
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        found = hub_apps()
        assert any("vc_broken_plugin" in p and "boom in plugin" in p for p in found.problems)
        assert "customer_service" in {e.app.name for e in found.apps}
    finally:
        forget_modules("vc_broken_plugin")


# -- the hub ----------------------------------------------------------------------------------------
def test_the_hub_shows_the_fourth_app_and_runs_its_page(fourth_app, tmp_path, monkeypatch):
    monkeypatch.setenv("VERTICORE_HOME", str(tmp_path))
    at = AppTest.from_file(str(HUB_SCRIPT), default_timeout=TIMEOUT).run()
    assert not at.exception
    assert "My fourth app" in [s.value for s in at.subheader]
    assert any("A minimal app that plugs into Verticore." in m.value for m in at.markdown)
    assert not [w.value for w in at.sidebar.warning]
    at.switch_page(str(fourth_app / "my_fourth_app" / "dashboard" / "fourth_page.py")).run()
    assert not at.exception
    assert at.header[0].value == "Hello from the fourth app"


# -- the demo ---------------------------------------------------------------------------------------
def test_the_demo_lists_and_prepares_the_fourth_app(app_root, tmp_path):
    env = _env(app_root, tmp_path)
    listed = _run(["-m", "verticore.demo", "--list", "--json"], env)
    assert listed.returncode == 0, listed.stderr[-2000:]
    rows = {r["name"]: r for r in json.loads(listed.stdout[listed.stdout.index("["):])}
    assert list(rows)[-1] == "core" and rows["my_fourth_app"] == {
        "name": "my_fourth_app", "title": "My fourth app", "has_demo": True, "ready": False}

    prepared = _run(["-m", "verticore.demo", "--prepare-only", "--only", "my_fourth_app", "--quiet"], env)
    assert prepared.returncode == 0, prepared.stdout[-2000:] + prepared.stderr[-2000:]
    assert "my_fourth_app: prepared" in prepared.stdout
    assert json.loads((tmp_path / "my_fourth_app" / "state.json").read_text()) == {"fast": True}
    listed = _run(["-m", "verticore.demo", "--list"], env)
    assert re.search(r"^my_fourth_app\s+ready\s+My fourth app$", listed.stdout, flags=re.MULTILINE), listed.stdout


# -- the verticore command --------------------------------------------------------------------------
def test_the_verticore_command_lists_and_runs_the_fourth_app(app_root, tmp_path):
    env = _env(app_root, tmp_path)
    apps = _run(["-m", "verticore.cli", "apps", "--json"], env)
    assert apps.returncode == 0, apps.stderr[-2000:]
    listing = json.loads(apps.stdout)
    fourth = next(a for a in listing["apps"] if a["name"] == "my_fourth_app")
    assert fourth["title"] == "My fourth app" and fourth["demo_ready"] is False and not listing["failed"]

    hello = _run(["-m", "verticore.cli", "my_fourth_app", "hello", "--name", "Ada"], env)
    assert hello.returncode == 0 and hello.stdout.strip() == "hello Ada from the fourth app", hello.stderr[-2000:]
    dashed = _run(["-m", "verticore.cli", "my-fourth-app", "--help"], env)
    assert dashed.returncode == 0 and "Greet someone" in dashed.stdout
    top = _run(["-m", "verticore.cli", "--help"], env)
    assert "my_fourth_app" in top.stdout and "My fourth app" in top.stdout
    unknown = _run(["-m", "verticore.cli", "my_fifth_app"], env)
    assert unknown.returncode == 2  # click's usage error, as for any unknown command


# -- dependency direction -----------------------------------------------------------------------------
def _installed_app_names() -> list[str]:
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    section = text.split('[project.entry-points."verticore.apps"]', 1)[1].split("\n[", 1)[0]
    return [line.split("=", 1)[0].strip() for line in section.splitlines() if "=" in line]


def test_the_core_names_no_app():
    names = _installed_app_names()
    assert {"customer_service", "finance_sentiment", "recommender"} <= set(names)
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, names)) + r")\b|\b(customer|finance)-(service|sentiment)\b")
    hits = []
    for path in sorted((ROOT / "shared" / "verticore").rglob("*.py")):
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if pattern.search(line) and not re.search(r"\brecommender systems?\b", line):
                hits.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not hits, "the core must not name an app:\n" + "\n".join(hits)


def test_no_sys_path_edits_in_library_app_or_test_code():
    # the packages are installed (editable): library, apps and tests import them as users do (bench
    # scripts only put their own folder first, for their shared helpers)
    pattern = "sys" + r"\.path\.(insert|append|extend)|sys\.path\s*="  # split so this line is no hit
    hits = [f"{p.relative_to(ROOT)}:{n}" for base in ("shared", "apps", "tests")
            for p in sorted((ROOT / base).rglob("*.py"))
            for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
            if re.search(pattern, line)]
    assert not hits, hits
