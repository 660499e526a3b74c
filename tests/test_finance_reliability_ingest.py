"""finance_sentiment ingest reliability (issue #11): nothing lost, nothing duplicated, nothing let in.

Folder offsets commit with the stored items (crash safety, truncation/rotation, partial lines),
bad timestamps are clamped and cannot silence detection, two processes on one database share one
detector (one alert per burst, deterministic keys), and item ids are unique per source.
"""
from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest

from finance_sentiment.config import MonitorConfig, Rule, WebhookTarget
from finance_sentiment.detect import SurgeDetector
from finance_sentiment.entities import Watchlist
from finance_sentiment.items import MAX_FUTURE_SKEW_S, NewsItem, ScoredItem, parse_timestamp
from finance_sentiment.paths import SAMPLES
from finance_sentiment.pipeline import Monitor
from finance_sentiment.scoring import SentimentModel, TopicModel
from finance_sentiment.sources import FolderSource
from finance_sentiment.store import MIGRATIONS, SQLiteStore
from verticore.errors import DataError

NOW = 1_750_000_000.0
RULE = Rule("neg", series="entity", window_minutes=60, min_count=4, z_threshold=2.5, min_share=0.5,
            cooldown_minutes=120, resolve_minutes=30)


def _lines(ids, prefix="story") -> bytes:
    return b"".join(json.dumps({"id": str(i), "title": f"{prefix} {i}"}).encode() + b"\n" for i in ids)


def _ids(recs) -> list[str]:
    return [r["id"] for r in recs]


# -- 1. folder offsets ----------------------------------------------------------------------
def test_read_position_moves_only_when_the_records_are_committed(tmp_path):
    db = tmp_path / "f.db"
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jsonl").write_bytes(_lines(range(5)))
    assert _ids(FolderSource(tmp_path / "in", SQLiteStore(db)).poll()) == ["0", "1", "2", "3", "4"]
    # the process died before storing them: a restart reads them again
    src = FolderSource(tmp_path / "in", SQLiteStore(db))
    batches = list(src.batches(batch_size=2))
    assert [_ids(b.records) for b in batches] == [["0", "1"], ["2", "3"], ["4"]]
    src.commit(batches[0])  # only the first batch was stored
    assert _ids(FolderSource(tmp_path / "in", SQLiteStore(db)).poll()) == ["2", "3", "4"]


def test_truncated_rotated_or_replaced_files_are_read_from_the_start(tmp_path):
    store = SQLiteStore(tmp_path / "f.db")
    inbox = tmp_path / "in"
    inbox.mkdir()
    f = inbox / "a.jsonl"

    def read() -> list[str]:
        src = FolderSource(inbox, store)
        recs = src.poll()
        src.ack()
        return _ids(recs)

    f.write_bytes(_lines(range(3)))
    assert read() == ["0", "1", "2"]
    f.write_bytes(_lines(["t1"]))  # truncated in place (copytruncate): smaller than the offset
    assert read() == ["t1"]
    os.rename(f, inbox / "a.jsonl.1")  # rotated: a new file (new inode) under the same name, longer than before
    f.write_bytes(_lines(["r1", "r2", "r3", "r4"]))
    assert read() == ["r1", "r2", "r3", "r4"]
    with open(f, "r+b") as fh:  # same inode, rewritten in place with different, longer content
        fh.write(_lines(["w1", "w2", "w3", "w4", "w5"]))
    assert read() == ["w1", "w2", "w3", "w4", "w5"]
    with open(f, "ab") as fh:  # plain appends still continue where we were
        fh.write(_lines(["w6"]))
    assert read() == ["w6"] and read() == []


def test_partial_last_line_waits_for_the_writer(tmp_path):
    store = SQLiteStore(tmp_path / "f.db")
    f = tmp_path / "a.jsonl"
    f.write_bytes(_lines(["1"]) + b'{"id": "2", "ti')
    src = FolderSource(f, store)
    assert _ids(src.poll()) == ["1"]
    src.ack()
    assert src.poll() == []  # still incomplete
    with open(f, "ab") as fh:
        fh.write(b'tle": "two"}')  # a whole object, newline not written yet: nothing is left behind
    assert _ids(src.poll()) == ["2"]
    src.ack()
    with open(f, "ab") as fh:
        fh.write(b"\n" + _lines(["3"]))
    assert _ids(src.poll()) == ["3"]  # the late newline does not repeat "2"


def test_one_shot_ingest_reads_a_finished_csv_in_a_folder(tmp_path):
    inbox = tmp_path / "in"
    inbox.mkdir()
    c = inbox / "b.csv"
    c.write_text("id,title\n1,one\n2,two\n")
    old = time.time() - 60
    os.utime(c, (old, old))  # written a minute ago: complete, so a single poll reads it
    src = FolderSource(inbox, SQLiteStore(tmp_path / "f.db"))
    assert _ids(src.poll()) == ["1", "2"]
    src.ack()
    assert src.poll() == []


# -- monitor helpers (a deterministic keyword classifier stands in for the fine-tuned model) --
class KeywordClassifier:
    labels = ["negative", "neutral", "positive"]

    def predict_proba(self, texts, show_progress=False):
        neg = ("plunge", "loss", "fine", "recall", "fraud", "cuts", "probe", "strike", "warns", "halted")
        return np.asarray([[0.9, 0.08, 0.02] if any(w in t.lower() for w in neg) else [0.05, 0.9, 0.05] for t in texts],
                          dtype=np.float32)


def _monitor(db, embedder, webhooks=()) -> Monitor:
    cfg = MonitorConfig(rules=[RULE], webhooks=list(webhooks))
    return Monitor(SQLiteStore(db), SentimentModel(KeywordClassifier(), version="kw/1"), TopicModel(embedder, cfg.topics),
                   Watchlist.load(SAMPLES / "watchlist.csv"), cfg, embedder)


BURST = ["fined over safety breaches", "shares plunge 20%", "warns of annual loss", "cuts flights after pilot strike",
         "faces fraud probe", "recall of aircraft parts", "CEO quits amid probe", "trading halted after loss",
         "pilots strike again", "plunge deepens"]


def _burst(t0, n=len(BURST), prefix="b"):
    return [{"id": f"{prefix}{j}", "title": f"Meridian Airlines {BURST[j % len(BURST)]} ({prefix}{j})",
             "url": f"https://n.example/{prefix}{j}", "published_at": t0 + j * 120} for j in range(n)]


def test_crash_mid_ingest_then_restart_stores_every_record_exactly_once(tmp_path, default_embedder, monkeypatch):
    f = tmp_path / "news.jsonl"
    recs = [{"id": f"n{i}", "title": f"Kestrel Logistics update number {i}", "published_at": NOW - 3600 + i} for i in range(25)]
    f.write_text("".join(json.dumps(r) + "\n" for r in recs))
    db = tmp_path / "m.db"
    mon = _monitor(db, default_embedder)
    real_insert, calls = SQLiteStore.insert_items, {"n": 0}

    def dying_insert(self, items):
        calls["n"] += 1
        if calls["n"] == 5:  # third batch, originals: the process dies inside the transaction
            raise KeyboardInterrupt("killed")
        return real_insert(self, items)

    monkeypatch.setattr(SQLiteStore, "insert_items", dying_insert)
    with pytest.raises(KeyboardInterrupt):
        for _ in mon.ingest(FolderSource(f, mon.store), batch_size=5, now=NOW):
            pass
    mon.close()
    monkeypatch.setattr(SQLiteStore, "insert_items", real_insert)
    assert SQLiteStore(db).count_items() == 10  # two batches committed with their read position
    mon2 = _monitor(db, default_embedder)  # restart
    results = list(mon2.ingest(FolderSource(f, mon2.store), batch_size=5, now=NOW))
    assert sum(r.accepted + r.duplicates for r in results) == 15 and sum(r.skipped_ids for r in results) == 0
    rows = mon2.store._query("SELECT item_id FROM items")
    assert sorted(r["item_id"] for r in rows) == sorted(r["id"] for r in recs)
    assert list(mon2.ingest(FolderSource(f, mon2.store), now=NOW)) == []  # all read
    mon2.close()


# -- 3. timestamps --------------------------------------------------------------------------
@pytest.mark.parametrize("raw, expect", [
    ("2099-01-01T00:00:00Z", NOW + MAX_FUTURE_SKEW_S),
    (NOW + 2 * 3600, NOW + MAX_FUTURE_SKEW_S),  # a feed two hours ahead (wrong time zone)
    ("inf", NOW + MAX_FUTURE_SKEW_S),
    ("-inf", None),
    ("NaN", NOW),
    (0, None),  # 1970
])
def test_out_of_range_timestamps_are_clamped_and_marked(raw, expect):
    it = NewsItem.from_dict({"title": "Acme update", "published_at": raw}, now=NOW)
    assert np.isfinite(it.published_at) and NOW - 3651 * 86400 < it.published_at <= NOW + MAX_FUTURE_SKEW_S
    if expect is not None:
        assert it.published_at == expect
    assert it.meta["time_clamped"] is True and it.meta["original_published_at"] == str(raw)
    ok = NewsItem.from_dict({"title": "Acme update", "published_at": NOW - 600}, now=NOW)
    assert ok.published_at == NOW - 600 and "time_clamped" not in ok.meta
    with pytest.raises(DataError, match="not a finite time"):
        parse_timestamp("nan")


def _scored(i, ts, sentiment, ticker="AAA"):
    s = ScoredItem(NewsItem(f"id{i}", f"headline {i}", published_at=ts, url=f"https://n.example/{i}", source="t"), f"h{i}")
    s.sentiment, s.sentiment_score, s.entities, s.rowid = sentiment, -0.9 if sentiment == "negative" else 0.0, [ticker], i
    return s


def _hist(det, start, n=40):
    """Quiet, mostly neutral history so the series has a baseline."""
    for i in range(n):
        det.observe([_scored(i, start + i * 600, "negative" if i % 10 == 0 else "neutral")], now=start + i * 600)


def test_one_future_timestamp_does_not_silence_the_series(tmp_path):
    det = SurgeDetector([RULE])
    _hist(det, NOW - 40 * 600)
    det.observe([_scored(500, parse_timestamp("2099-01-01T00:00:00Z"), "neutral")], now=NOW)  # bypassing ingest
    burst = [_scored(600 + j, NOW + 60 + j * 120, "negative") for j in range(6)]
    opened = [e for j, s in enumerate(burst) for e in det.observe([s], now=NOW + 60 + j * 120) if e.kind == "opened"]
    assert len(opened) == 1


def test_state_poisoned_by_old_code_recovers():
    old = SurgeDetector([RULE])
    _hist(old, NOW - 40 * 600)
    old.observe([_scored(500, 4_070_908_800.0, "negative")])  # what the old code persisted: series time in 2099
    data = json.loads(json.dumps(old.to_dict()))
    assert data["states"]["neg|entity|AAA"]["last_ts"] > 4e9
    det = SurgeDetector([RULE])
    det.load_dict(data)
    burst = [_scored(600 + j, NOW + 60 + j * 120, "negative") for j in range(6)]
    opened = [e for j, s in enumerate(burst) for e in det.observe([s], now=NOW + 60 + j * 120) if e.kind == "opened"]
    assert len(opened) == 1
    assert [e.kind for e in det.tick(NOW + 3 * 3600)] == ["resolved"]


def test_bad_timestamp_through_the_pipeline_does_not_silence_alerts(tmp_path, default_embedder):
    db = tmp_path / "m.db"
    mon = _monitor(db, default_embedder)
    bg = [{"id": f"bg{i}", "title": f"Meridian Airlines adds route number {i}", "published_at": NOW - 20 * 3600 + i * 1800}
          for i in range(30)]
    mon.process(bg, source="feed", now=NOW)
    r = mon.process([{"id": "x", "title": "Meridian Airlines schedules investor day", "published_at": "2099-01-01T00:00:00Z"}],
                    source="feed", now=NOW)
    row = mon.store.recent_items(limit=1, entity="MRD")[0]
    assert row["published_at"] == NOW + MAX_FUTURE_SKEW_S and row["meta"]["time_clamped"] is True
    assert row["meta"]["original_published_at"] == "2099-01-01T00:00:00Z" and r.accepted == 1
    mon.close()
    mon = _monitor(db, default_embedder)  # the persisted detector state is fine too
    events = []
    for rec in _burst(NOW + 60, n=8):
        events += mon.process([rec], source="feed", now=rec["published_at"]).events
    assert len([e for e in events if e.kind == "opened"]) == 1
    mon.close()


def test_late_items_are_baseline_not_signal():
    det = SurgeDetector([RULE])
    _hist(det, NOW - 40 * 600)
    late = [_scored(700 + j, NOW - 5 * 3600 + j, "negative") for j in range(6)]  # hours late, out of order
    assert not [e for e in det.observe(late, now=NOW) if e.kind == "opened"]
    assert all(o.ts >= NOW - 40 * 600 - 3600 for o in det.states["neg|entity|AAA"].window)


# -- 6. one detector per database, deterministic alert keys ------------------------------------
def test_alert_key_comes_from_the_data_not_the_batching():
    burst = [_scored(600 + j, NOW + 60 + j * 120, "negative") for j in range(6)]
    keys = []
    for batches, lag in (([burst], 0.0), ([[s] for s in burst], 0.0), ([burst[:3], burst[3:]], 50.0)):
        det = SurgeDetector([RULE])
        _hist(det, NOW - 40 * 600)
        evs = [e for b in batches for e in det.observe(b, now=b[-1].item.published_at + lag)]
        keys += [e.alert["alert_key"] for e in evs if e.kind == "opened"]
    assert keys == [f"neg|entity|AAA|{int(NOW + 60)}"] * 3  # the episode's first negative item


def test_watch_and_serve_on_one_database_raise_one_alert(tmp_path, default_embedder):
    db = tmp_path / "m.db"
    hook = WebhookTarget("risk", "http://127.0.0.1:9/hook")
    watch, serve = _monitor(db, default_embedder, [hook]), _monitor(db, default_embedder, [hook])
    bg = [{"id": f"bg{i}", "title": f"Meridian Airlines adds route number {i}", "published_at": NOW - 20 * 3600 + i * 1800}
          for i in range(30)]
    watch.process(bg, source="file:x", now=NOW)
    burst = _burst(NOW + 60)
    events = []
    for j, rec in enumerate(burst):  # the burst arrives half through the folder, half over HTTP
        mon = (watch, serve)[j % 2]
        events += mon.process([rec], source="file:x" if mon is watch else "http", now=rec["published_at"]).events
    opened = [e for e in events if e.kind == "opened"]
    assert len(opened) == 1
    store = SQLiteStore(db)
    assert len(store.list_alerts()) == 1 and len(store.list_outbox()) == 1
    assert len(store.list_alerts()[0]["evidence"]) >= 5  # both processes' items are evidence of one episode
    for m in (watch, serve):
        m.close()


# -- 7. ids per source ------------------------------------------------------------------------
def test_same_guid_from_two_feeds_are_two_items(tmp_path, default_embedder):
    mon = _monitor(tmp_path / "m.db", default_embedder)
    recs = [{"id": "1", "source": "Feed A", "title": "Aurora Bank opens new branch", "published_at": NOW - 60},
            {"id": "1", "source": "Feed B", "title": "Helix Pharma wins approval for drug", "published_at": NOW - 60}]
    r = mon.process(recs, now=NOW)
    assert r.accepted == 2 and r.skipped_ids == 0
    again = mon.process(recs, now=NOW)
    assert again.accepted == 0 and again.skipped_ids == 2  # still idempotent per (source, id)
    mon.close()


def test_v2_database_upgrades_in_place(tmp_path):
    from verticore.storage import connect, schema_version

    db = tmp_path / "old.db"
    conn = connect(db, MIGRATIONS[:2])
    for rid, dup in ((1, None), (2, 1)):
        conn.execute("INSERT INTO items (id, item_id, source, title, published_at, ingested_at, title_hash, duplicate_of,"
                     " topic_model_version) VALUES (?, ?, 'Feed A', 't', 1, 1, 'h', ?, 'tm/1')", (rid, str(rid), dup))
    conn.execute("INSERT INTO item_series VALUES (1, 'entity', 'AAA')")
    conn.execute("INSERT INTO kv (key, value, updated_at) VALUES ('x', '1', 0)")
    conn.close()
    store = SQLiteStore(db)
    assert schema_version(store.conn) == len(MIGRATIONS)
    rows = store._query("SELECT id, item_id, source, duplicate_of, topic_model_version FROM items ORDER BY id")
    assert rows == [{"id": 1, "item_id": "1", "source": "Feed A", "duplicate_of": None, "topic_model_version": "tm/1"},
                    {"id": 2, "item_id": "2", "source": "Feed A", "duplicate_of": 1, "topic_model_version": "tm/1"}]
    assert store.series_keys("entity") == [("AAA", 1)] and store.kv_get("x") == 1
    assert store.conn.execute("PRAGMA foreign_key_check").fetchall() == []
    store.conn.execute("INSERT INTO items (item_id, source, title, published_at, ingested_at, title_hash)"
                       " VALUES ('1', 'Feed B', 'other', 1, 1, 'h2')")  # same guid, other feed: fine now
    import sqlite3

    with pytest.raises(sqlite3.IntegrityError):
        store.conn.execute("INSERT INTO items (item_id, source, title, published_at, ingested_at, title_hash)"
                           " VALUES ('1', 'Feed A', 'dup', 1, 1, 'h3')")
    assert store.existing_item_ids([("Feed A", "1"), ("Feed B", "1"), ("Feed C", "1")]) == {("Feed A", "1"), ("Feed B", "1")}
