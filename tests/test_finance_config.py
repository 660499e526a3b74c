"""The monitor config is pydantic dataclasses: a bad file fails with one line naming the file, entry and field."""
from __future__ import annotations

import pytest

from finance_sentiment.config import MonitorConfig, Rule, WebhookTarget, dump_config_yaml, load_config
from verticore.errors import DataError


@pytest.mark.parametrize("text,message", [
    ("rules: [{name: a, min_count: 0}]", "rule 'a': min_count must be an integer >= 1 (got 0)"),
    ("rules: [{name: a, min_count: 2.5}]", "rule 'a': min_count must be an integer >= 1 (got 2.5)"),
    ("rules: [{name: a, window_minutes: true}]", "rule 'a': window_minutes must be a positive number (got True)"),
    ("rules: [{name: a, min_share: 1.5}]", "rule 'a': min_share must be in [0, 1] (got 1.5)"),
    ("rules: [{min_count: 3}]", "rule '?': name is required"),
    ("rules: [{name: '  '}]", "rule '  ': name must not be empty"),
    ("rules: [7]", "rules[0]: must be a mapping (got int)"),
    ("webhooks: [{name: w, url: 'https://hooks.example.com/x', format: xml}]",
     "webhook 'w': format must be json or slack (got 'xml')"),
    ("webhooks: [{name: w, url: 'https://hooks.example.com/x', max_attempts: 0}]",
     "webhook 'w': max_attempts must be an integer >= 1 (got 0)"),
    ("notify: {repeat_interval: 1m, group_interval: 5m}", "notify: repeat_interval (60s) must be at least group_interval"),
    ("max_sentences: many", "max_sentences must be an integer >= 1 (got 'many')"),
    ("colour: red", "unknown key(s) ['colour']; known keys are ["),
])
def test_bad_config_is_one_line_naming_file_entry_and_field(tmp_path, text, message):
    f = tmp_path / "monitor.yaml"
    f.write_text(text)
    with pytest.raises(DataError) as info:
        load_config(f)
    assert str(info.value).startswith(f"{f}: {message}") and "\n" not in str(info.value)


def test_config_round_trips_and_builds_in_code(tmp_path):
    cfg = MonitorConfig(rules=[Rule("neg", min_count=3)], webhooks=[WebhookTarget("w", "https://hooks.example.com/x")])
    f = tmp_path / "c.yaml"
    f.write_text(dump_config_yaml(cfg))
    again = load_config(f)
    assert again.rules == cfg.rules and again.webhooks[0].url == "https://hooks.example.com/x"
    assert again.notify.group_by == ["rule", "kind", "entity", "topic"] and load_config(None) == MonitorConfig()
