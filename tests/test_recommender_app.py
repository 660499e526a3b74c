"""Recommender app: demo preparation (fast mode), HTTP API, CLI, Streamlit page (AppTest + Chromium)."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "apps" / "recommender" / "dashboard" / "recommender_page.py"


@pytest.fixture(scope="module")
def demo_home(tmp_path_factory):
    from recommender.demo import is_ready, prepare_demo

    home = tmp_path_factory.mktemp("vhome")
    old = os.environ.get("VERTICORE_DEMO_FAST")
    os.environ["VERTICORE_DEMO_FAST"] = "1"
    try:
        prepare_demo(home, show_progress=False)
        assert is_ready(home)
        yield home
    finally:
        if old is None:
            os.environ.pop("VERTICORE_DEMO_FAST", None)
        else:
            os.environ["VERTICORE_DEMO_FAST"] = old


@pytest.fixture(scope="module")
def demo_rec(demo_home):
    from recommender.demo import load_demo

    return load_demo(demo_home)


def test_prepare_demo_is_idempotent_and_uses_finetuned_model(demo_home, demo_rec):
    from recommender.demo import demo_dir, prepare_demo

    meta = json.loads((demo_dir(demo_home) / "demo.json").read_text())
    assert meta["settings"]["fast"] is True and meta["items"] == len(demo_rec.catalog) > 0
    assert Path(demo_rec.catalog.embedder.model) == Path(meta["model"])  # the behaviour-tuned model replaced default
    assert demo_rec.mode == "hybrid" and demo_rec.cf is not None
    stamp = (demo_dir(demo_home) / "demo.json").stat().st_mtime_ns
    t0 = time.time()
    prepare_demo(demo_home, show_progress=False)
    assert time.time() - t0 < 2 and (demo_dir(demo_home) / "demo.json").stat().st_mtime_ns == stamp


def test_index_from_another_model_is_refused(demo_home, default_embedder):
    from recommender import Catalog
    from recommender.demo import demo_dir
    from verticore.errors import IndexMismatchError

    with pytest.raises(IndexMismatchError):
        Catalog.load(demo_dir(demo_home) / "state" / "catalog", embedder=default_embedder)


def test_http_api(demo_rec, tmp_path):
    from fastapi.testclient import TestClient

    from recommender.api import create_app

    demo_rec.save(tmp_path / "state")
    from recommender import Recommender

    rec = Recommender.load(tmp_path / "state")
    from verticore.serving import ServingSettings

    client = TestClient(create_app(rec, state_dir=tmp_path / "state",  # auth is covered in test_app_apis.py
                                   settings=ServingSettings(insecure_no_auth=True, usage_db=tmp_path / "u.db")))
    h = client.get("/health").json()
    assert h["status"] == "ok" and h["items"] == len(rec.catalog)
    user = rec.interactions.users[0]
    r = client.get(f"/recommend/{user}", params={"k": 5, "diversity": 0.3})
    assert r.status_code == 200
    recs = r.json()["recommendations"]
    assert len(recs) == 5 and all(x["explanation"] for x in recs)
    assert not {x["item"] for x in recs} & rec.interactions.seen(user)
    cold = client.get("/recommend/nobody")  # an unknown user gets a cold start, not a 404
    assert cold.status_code == 200 and cold.json()["cold_start"] is True and cold.json()["recommendations"]
    item = rec.catalog.ids[0]
    sim = client.get(f"/similar/{item}", params={"k": 3}).json()["similar"]
    assert len(sim) == 3 and item not in {x["item"] for x in sim}
    assert client.get("/similar/nope").status_code == 404
    assert client.get("/search", params={"q": "dragons and magic"}).json()["results"]
    assert client.get("/search", params={"q": "  "}).status_code == 422
    assert client.get("/search", params={"q": "x", "filters": "[1]"}).status_code == 422
    new = {"item_id": "new1", "title": "The Galactic Dragon", "year": 2025, "genre": "Fantasy",
           "description": "A dragon flies through space to save a magic kingdom.", "tags": "dragons|space"}
    up = client.post("/items", json={"items": [new, {"item_id": "e", "title": ""}]}).json()
    assert up["added"] == 1 and up["skipped"] == {"empty text": 1}
    hits = client.get("/search", params={"q": "a dragon flying through space", "k": 1}).json()["results"]
    assert hits[0]["item"] == "new1"  # recommendable the moment it is added
    assert Recommender.load(tmp_path / "state").catalog.get("new1")  # persisted
    assert client.request("DELETE", "/items", json={"ids": ["new1"]}).json()["removed"] == 1
    assert client.request("DELETE", "/items", json={"ids": ["new1"]}).status_code == 404


def test_cli_build_recommend_and_errors(tmp_path, capsys):
    from recommender.cli import main as _main

    def main(argv):
        try:
            _main(argv)
        except SystemExit as exc:
            if exc.code not in (0, None):
                raise

    items = tmp_path / "items.csv"
    items.write_text("item_id,title,description,tags\n"
                     "a,Ghost Ship,A haunted ship full of ghosts,horror\n"
                     "b,Haunted Hotel,Ghosts haunt an old hotel,horror\n"
                     "c,Bunny Hop,A cartoon rabbit learns to dance,cartoon\n"
                     "d,Kitten Band,A cartoon about kittens who play music,cartoon\n"
                     "a,Dup,dup,dup\n", encoding="utf-8")
    inter = tmp_path / "inter.csv"
    inter.write_text("user,item,rating,timestamp\nu1,a,5,1\nu1,zzz,5,2\nu2,c,5,1\n", encoding="utf-8")
    state = tmp_path / "state"
    main(["build", "--items", str(items), "--interactions", str(inter), "--state", str(state)])
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["items"] == 4 and out["skipped_interactions"] == {"unknown item": 1}
    main(["recommend", "u1", "-k", "1", "--state", str(state), "--json"])
    recs = json.loads(capsys.readouterr().out)
    assert recs[0]["item"] == "b" and recs[0]["because"] == ["a"]
    main(["taste", "cartoons with cute animals", "-k", "2", "--state", str(state)])
    assert "Kitten Band" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        main(["recommend", "nobody", "--state", str(state)])
    assert e.value.code == 3 and "error: unknown user 'nobody'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["recommend", "u1", "--state", str(tmp_path / "missing")])
    assert e.value.code == 3 and "recommender build" in capsys.readouterr().err
    empty = tmp_path / "empty.csv"
    empty.write_text("item_id,title\n", encoding="utf-8")
    with pytest.raises(SystemExit) as e:
        main(["build", "--items", str(empty), "--state", str(tmp_path / "s2")])
    assert e.value.code == 3 and "no rows" in capsys.readouterr().err


def test_dashboard_page_apptest(demo_home, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("VERTICORE_HOME", str(demo_home))
    at = AppTest.from_file(str(PAGE), default_timeout=120)
    at.run()
    assert not at.exception, at.exception
    assert at.title[0].value == "Recommender"
    assert len(at.tabs) == 5
    assert len(at.dataframe) >= 4  # history, recommendations, cold start, search, similar
    at.text_input[0].input("scary ghosts in an old house").run()
    assert not at.exception
    cold = at.dataframe[2].value
    assert len(cold) == 8
    at.selectbox[0].set_value(at.selectbox[0].options[1]).run()
    assert not at.exception


def test_dashboard_page_without_demo_state(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("VERTICORE_HOME", str(tmp_path))
    at = AppTest.from_file(str(PAGE), default_timeout=60)
    at.run()
    assert not at.exception
    assert "not prepared" in at.warning[0].value


@pytest.mark.browser
@pytest.mark.slow
def test_dashboard_page_in_chromium(demo_home):
    from streamlit_harness import SCREENSHOTS, require_chromium, screenshot_streamlit

    require_chromium()
    def both_tables(page):  # history and recommendations side by side, both painted
        page.wait_for_function("document.querySelectorAll('[data-testid=\"stDataFrame\"]').length >= 2",
                               timeout=120_000)
        page.wait_for_timeout(1500)

    png = screenshot_streamlit(PAGE, SCREENSHOTS / "recommender.png", ["Recommender", "History", "Recommended"],
                               env={"VERTICORE_HOME": str(demo_home), "VERTICORE_DEMO_FAST": "1"}, timeout=150,
                               actions=both_tables)
    assert png.exists() and png.stat().st_size > 10_000
