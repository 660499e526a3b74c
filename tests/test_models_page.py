"""The hub's Models page (``verticore/dashboard/models_page.py``) on a temporary registry with two
versions: versions table, metric plot, promotion history with the gate result, and admin-only
promote / rollback (a failed gate refuses with the registry's one-line error)."""
from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from verticore.dashboard import CORE_PAGE, auth
from verticore.registry.store import ModelRegistry

PAGE = str(CORE_PAGE.with_name("models_page.py"))
APP, MODEL = "customer_service", "intent"
PASSWORDS = {"vic": "viewer-pass-1", "ada": "agent-pass-1", "root": "admin-pass-1"}
Y = ["a", "b"] * 20


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("VERTICORE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv(auth.USERS_ENV, raising=False)
    monkeypatch.delenv(auth.LOGIN_ENV, raising=False)
    (tmp_path / "home").mkdir()
    return tmp_path / "home"


@pytest.fixture
def registry(home, tmp_path) -> ModelRegistry:
    """v1 in production, v2 registered with a failing gate against v1."""
    reg = ModelRegistry(home / "registry")
    for n, acc in ((1, 0.9), (2, 0.5)):
        art = tmp_path / f"art{n}"
        art.mkdir()
        (art / "weights.bin").write_text(f"w{n}")
        reg.register(APP, MODEL, art, data_fingerprint=f"sha256:data{n}", recipe={"epochs": n},
                     metrics={"accuracy": acc, "macro_f1": acc - 0.05, "n": 40}, eval_split="fixed:split1",
                     parent=1 if n == 2 else None, created_by="trainer")
    reg.promote(APP, MODEL, 1, by="trainer", reason="first")
    worse = ["a"] * 40  # right on half of the split vs production right on all
    reg.gate(APP, MODEL, 2, y_true=Y, candidate_pred=worse, production_pred=Y, n_boot=200)
    return reg


def _as(at: AppTest, username: str) -> AppTest:
    at.session_state["authentication_status"] = True
    at.session_state["username"] = username
    return at


def test_models_page_empty_registry(home):
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    assert not at.exception
    assert "No model versions registered yet" in at.info[0].value


def test_models_page_shows_versions_plot_history_and_admin_actions(registry):
    at = AppTest.from_file(PAGE, default_timeout=60).run()  # loopback, no users: local admin
    assert not at.exception, at.exception
    assert at.selectbox(key="models_pick").value == f"{APP}/{MODEL}"
    versions = at.dataframe[0].value
    assert versions["version"].tolist() == [1, 2]
    assert versions["accuracy"].tolist() == [0.9, 0.5]
    assert versions["aliases"].tolist() == ["production", ""]
    assert versions["parent"].tolist() == ["–", "v1"]
    assert versions["data fingerprint"].tolist() == ["sha256:data1", "sha256:data2"]
    assert at.selectbox(key="models_metric").value == "accuracy"  # the gate's primary metric
    assert at.get("plotly_chart")
    history = at.dataframe[1].value
    assert history["from → to"].tolist() == ["– → v1"] and history["by"].tolist() == ["trainer"]

    # the gate failed: the registry refuses, the page shows its one line, production is untouched
    at.selectbox(key="models_promote_pick").set_value(2)
    at.button(key="models_promote").click().run()
    assert not at.exception
    assert "not promoted" in at.error[0].value and "\n" not in at.error[0].value
    assert registry.aliases(APP, MODEL)["production"] == 1

    # a passing gate: promoted, shown in the history with the gate result
    registry.gate(APP, MODEL, 2, y_true=Y, candidate_pred=Y, production_pred=["a"] * 40, n_boot=200)
    at.selectbox(key="models_promote_pick").set_value(2)
    at.text_input(key="models_reason").input("better")
    at.button(key="models_promote").click().run()
    assert not at.exception
    assert "production now points at customer_service/intent v2" in at.success[0].value
    assert registry.aliases(APP, MODEL)["production"] == 2
    history = at.dataframe[1].value
    top = history.iloc[0]
    assert top["from → to"] == "v1 → v2" and top["by"] == "local" and top["reason"] == "better"
    assert top["gate"] == "passed vs v1" and 0 <= top["p-value"] <= 1 and top["CI"].startswith("[")
    assert at.dataframe[0].value["aliases"].tolist() == ["", "production"]

    at.button(key="models_rollback").click().run()
    assert not at.exception and "rolled back to customer_service/intent v1" in at.success[0].value
    assert registry.aliases(APP, MODEL)["production"] == 1
    assert at.dataframe[1].value.iloc[0]["action"] == "rollback"


def test_models_page_actions_are_for_admins_only(registry, home):
    for (username, password), role in zip(PASSWORDS.items(), auth.ROLES):
        auth.add_user(username, password, role, name=username.title())
    for who in ("vic", "ada"):
        at = _as(AppTest.from_file(PAGE, default_timeout=60), who).run()
        assert not at.exception and len(at.dataframe) == 2  # everyone reads
        assert not at.button
        assert any("needs the **admin** role" in c.value for c in at.caption)
    at = _as(AppTest.from_file(PAGE, default_timeout=60), "root").run()
    assert at.button(key="models_promote") and at.button(key="models_rollback")
    auth.add_user("root", PASSWORDS["root"], "agent", replace=True)  # demoted with the buttons on screen
    at.button(key="models_rollback").click().run()
    assert "needs the admin role" in at.error[0].value
    assert registry.aliases(APP, MODEL)["production"] == 1


def test_hub_lists_the_models_page(registry):
    from verticore.dashboard import HUB_SCRIPT

    at = AppTest.from_file(str(HUB_SCRIPT), default_timeout=120).run()
    assert not at.exception
    at.switch_page(PAGE).run()  # registered in the hub's navigation
    assert not at.exception and at.title[0].value == "Models"
    assert at.dataframe[0].value["version"].tolist() == [1, 2]
