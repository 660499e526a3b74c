"""verticore.settings: every VERTICORE_* variable parsed in one place, one boolean rule, one-line errors."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from verticore import settings as S
from verticore.errors import VerticoreError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in list(os.environ):
        if name.upper().startswith(S.ENV_PREFIX):
            monkeypatch.delenv(name)


def test_defaults():
    s = S.get_settings()
    assert s.home is None and s.data is None and s.dashboard_users is None and s.cs_key is None
    assert s.cache == Path.home() / ".cache" / "verticore"
    assert s.num_threads is None and s.port == 8501 and s.host == "127.0.0.1" and s.webhook_allow == ""
    assert (s.demo_fast, s.ort_spin, s.mlflow, s.dashboard_login) == (False, False, True, False)


def test_every_variable_is_parsed(monkeypatch, tmp_path):
    values = {"HOME": str(tmp_path / "h"), "CACHE": "~/c", "DATA": str(tmp_path / "d"), "NUM_THREADS": " 3 ",
              "ORT_SPIN": "on", "DEMO_FAST": "YES", "PORT": "9000", "HOST": "0.0.0.0", "MLFLOW": "off",
              "WEBHOOK_ALLOW": "127.0.0.1,10.0.0.0/8", "DASHBOARD_USERS": str(tmp_path / "u.yaml"),
              "DASHBOARD_LOGIN": "required", "CS_KEY": "k" * 44}
    assert {S.env_name(f) for f in S.VerticoreSettings.model_fields} == {S.ENV_PREFIX + k for k in values}
    for k, v in values.items():
        monkeypatch.setenv(S.ENV_PREFIX + k, v)
    s = S.get_settings()
    assert s.home == tmp_path / "h" and s.cache == Path.home() / "c" and s.data == tmp_path / "d"
    assert s.num_threads == 3 and s.port == 9000 and s.host == "0.0.0.0"
    assert (s.demo_fast, s.ort_spin, s.mlflow, s.dashboard_login) == (True, True, False, True)
    assert s.webhook_allow == "127.0.0.1,10.0.0.0/8" and s.dashboard_users == tmp_path / "u.yaml"
    assert s.cs_key is not None and s.cs_key.get_secret_value() == "k" * 44 and "kkkk" not in repr(s)


@pytest.mark.parametrize("raw,expected", [("1", True), ("true", True), ("Yes", True), (" ON ", True),
                                          ("0", False), ("false", False), ("no", False), ("OFF", False),
                                          ("", False)])
def test_demo_fast_parsing(monkeypatch, raw, expected):
    monkeypatch.setenv("VERTICORE_DEMO_FAST", raw)
    assert S.get_settings().demo_fast is expected


def test_all_demo_fast_readers_agree(monkeypatch):
    """The core and the three apps used to parse VERTICORE_DEMO_FAST four ways ("on" was fast for some only)."""
    from customer_service import demo as cs_demo
    from finance_sentiment import demo as fin_demo
    from recommender import demo as rec_demo
    from verticore import demo as core_demo

    monkeypatch.setenv("VERTICORE_DEMO_FAST", "on")
    assert core_demo.fast_mode() and cs_demo._fast() and fin_demo.fast_mode()
    fast = rec_demo._settings()
    monkeypatch.setenv("VERTICORE_DEMO_FAST", "off")
    assert not (core_demo.fast_mode() or cs_demo._fast() or fin_demo.fast_mode())
    assert rec_demo._settings() != fast


def test_env_changes_are_seen_without_reload(monkeypatch):
    monkeypatch.setenv("VERTICORE_PORT", "8600")
    assert S.get_settings().port == 8600
    monkeypatch.setenv("VERTICORE_PORT", "8700")
    assert S.get_settings().port == 8700
    monkeypatch.delenv("VERTICORE_PORT")
    assert S.get_settings().port == 8501 and S.reload().port == 8501


@pytest.mark.parametrize("name,raw,message", [
    ("VERTICORE_PORT", "eighty", "VERTICORE_PORT must be an integer from 1 to 65535, got 'eighty'"),
    ("VERTICORE_PORT", "70000", "VERTICORE_PORT must be an integer from 1 to 65535, got '70000'"),
    ("VERTICORE_NUM_THREADS", "0", "VERTICORE_NUM_THREADS must be an integer >= 1, got '0'"),
    ("VERTICORE_DEMO_FAST", "maybe", "VERTICORE_DEMO_FAST must be one of 1/on/true/yes or 0/false/no/off, got 'maybe'"),
    ("VERTICORE_MLFLOW", "2", "VERTICORE_MLFLOW must be one of"),
    ("VERTICORE_DASHBOARD_LOGIN", "please", "VERTICORE_DASHBOARD_LOGIN must be one of 1/on/required/true/yes"),
])
def test_bad_value_is_one_line_naming_the_variable(monkeypatch, name, raw, message):
    monkeypatch.setenv(name, raw)
    with pytest.raises(S.SettingsError) as info:
        S.get_settings()
    text = str(info.value)
    assert text.startswith(message) and "\n" not in text and isinstance(info.value, VerticoreError)


def test_demo_main_reports_a_bad_port_and_exits_2(monkeypatch, capsys, tmp_path):
    from verticore import demo

    monkeypatch.setenv("VERTICORE_HOME", str(tmp_path))
    monkeypatch.setenv("VERTICORE_PORT", "eighty")
    assert demo.main(["--no-prepare", "--no-browser"]) == 2
    assert "error: VERTICORE_PORT must be an integer" in capsys.readouterr().err


def test_readers_use_the_settings(monkeypatch, tmp_path):
    from verticore.dashboard import auth, home
    from verticore.inference.onnx_backend import cache_root, physical_cores
    from verticore.netguard import allow_from_env
    from verticore.registry import tracking

    monkeypatch.setenv("VERTICORE_HOME", str(tmp_path))
    monkeypatch.setenv("VERTICORE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("VERTICORE_NUM_THREADS", "2")
    monkeypatch.setenv("VERTICORE_WEBHOOK_ALLOW", "10.0.0.0/8")
    monkeypatch.setenv("VERTICORE_MLFLOW", "no")
    monkeypatch.setenv("VERTICORE_DASHBOARD_LOGIN", "Required")
    assert home() == tmp_path and auth.users_path() == tmp_path / "dashboard_users.yaml"
    assert cache_root() == tmp_path / "cache" / "onnx" and physical_cores() == 2
    assert allow_from_env() and tracking._mlflow() is None and auth.login_forced()


def test_no_direct_environment_reads_of_verticore_variables():
    """Library and app code read VERTICORE_* only through verticore.settings."""
    pattern = re.compile(r"(environ\.get|getenv|environ\[)\(?\s*[\"']VERTICORE_")
    offenders = [str(p.relative_to(ROOT)) for base in ("shared", "apps") for p in (ROOT / base).rglob("*.py")
                 if pattern.search(p.read_text(encoding="utf-8"))]
    assert offenders == []


def test_readme_lists_every_variable():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    missing = [name for name, _, _ in S.describe() if f"`{name}`" not in readme]
    assert missing == []
