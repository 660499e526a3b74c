"""The fault bench in small form: real CLIs and writers SIGKILLed at random points lose nothing,
send each alert under one idempotency key, and always leave loadable state."""
from __future__ import annotations

import json

import pytest
from bench_scripts import load_bench_script


@pytest.fixture(scope="module")
def faults():
    return load_bench_script("faults")


@pytest.mark.slow
def test_small_fault_bench_loses_and_duplicates_nothing(faults, tmp_path, tmp_path_factory):
    from streamlit_harness import prepared_demo_home

    monitor = prepared_demo_home(tmp_path_factory, only=("finance_sentiment",)) / "finance_sentiment"
    out = tmp_path / "faults.json"
    faults.main(["--small", "--seed", "7", "--workdir", str(tmp_path / "work"), "--output", str(out),
                 "--monitor-models", str(monitor)])
    r = json.loads(out.read_text())
    wh = r["webhooks"]
    assert wh["kills"] >= 3 and wh["alerts"] >= 6
    assert wh["lost"] == 0 and wh["delivered_unique"] == wh["alerts"] and wh["keys_per_alert_max"] == 1
    ing = r["ingest"]
    assert ing["kills"] >= 3 and ing["lost"] == 0 and ing["stored_twice"] == 0 and ing["stored"] == ing["records"]
    assert r["recommender_save"]["loads_ok"] == r["recommender_save"]["kills"] >= 3
    assert r["kb_ingest"]["loads_ok"] == r["kb_ingest"]["kills"] >= 3
