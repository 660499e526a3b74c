"""Alerting quality on replayed streams of real sentences with many injected episodes of two kinds.

For each seed (``--seeds``), a stream of ``--hours`` of synthetic time (default 8 days) is built from
real test text only (Financial PhraseBank 50Agree, SemEval-2017 headlines and FiQA posts test splits;
never training text), each item attributed to one of the 12 watched (fictional) companies or to none:

* **background**: every company has its own rate: 8 normal companies (~4 items a day), 2 *noisy*
  ones (~12 a day) and 2 *quiet* ones (~one every two days); a quarter of the items name no company;
* **episodes** (``--episodes`` per seed, half of each kind, all after a 48 h warm-up so volume
  baselines exist), on random companies (quiet and noisy ones included), sizes varied and small
  ones included, a quarter of them overlapping the previous episode in time:

  - ``negative_share``: 5-8 negative sentences about one company within 20-50 minutes (the three
    test splits hold 146 distinct negative sentences: 20 episodes use most of them);
  - ``volume``: 8-20 items about one company within 30-50 minutes, drawn from the background's
    own mix (no more negative than usual: only the rate is abnormal).

Everything runs through the real monitor (the trained sentiment classifier, dedupe, entity matching)
with two entity rules: ``negative-surge`` (share) and ``volume-spike`` (volume), as in the sample
``rules.yaml``. Matching (per seed): an alert on a company opening between an episode's first item
and 60 minutes after its last is true when its signal fits the episode: a share alert fits a
negative_share episode; a volume alert fits either kind (a burst of negative items is also a burst of
items). Precision of a kind = fitting alerts of that signal / alerts of that signal; recall of a kind
= episodes of that kind detected by an alert of their own signal; time to alert = alert opening -
episode start. Figures are averaged over seeds; the median time to alert pools every kind and seed.

Writes ``bench/results/finance_alerts.json``: ``{"precision", "recall", "median_seconds_to_alert",
"by_kind": {"negative_share": {"precision", "recall", "median_seconds_to_alert", "items_read_negative"},
"volume": {...}}, "seeds", "episodes", "per_seed": [...], ...}``. ``items_read_negative``: the share of
negative-share episode items the monitor's model read as negative (the ceiling on what the share rule
can see); ``per_seed`` lists each missed episode as read-negative/size. ``--evidence probability``
counts items by P(negative) instead (see ``finance_sentiment.detect``); ``--seeds 1,2`` are the
streams the rule settings were chosen on, 13,14,15 the reported ones.

    python bench/finance_alerts.py [--model DIR] [--seeds 13,14,15] [--episodes 40] [--quick]
"""
from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _finance_common import DATA, PHRASEBANK, print_table, sentiment_artifact, write_result  # noqa: E402

KINDS = ("negative_share", "volume")
TEST_SOURCES = (PHRASEBANK, DATA / "financial_sentiment_extra" / "splits" / "semeval2017_headlines",
                DATA / "financial_sentiment_extra" / "splits" / "fiqa2018_posts")
T0 = 1_700_000_000.0
REUSE_GAP_S = 72 * 3600.0  # a sentence comes back only after the dedupe window (48 h) and more
MATCH_AFTER_S = 3600.0


@dataclass
class Episode:
    kind: str
    ticker: str
    start: float
    end: float
    size: int
    item_ids: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "ticker": self.ticker, "start": self.start, "end": self.end, "size": self.size}


def test_sentences() -> list[tuple[str, str]]:
    """(text, gold label) of every distinct test sentence of the three sources."""
    from finance_sentiment.training import read_sentiment_split

    out: dict[str, str] = {}
    for folder in TEST_SOURCES:
        df = read_sentiment_split(folder, "test")
        for t, y in zip(df["text"].astype(str), df["label"].astype(str)):
            out.setdefault(t, y)
    return list(out.items())


class TextPool:
    """Hands out sentences without repeating one within ``REUSE_GAP_S`` of stream time."""

    def __init__(self, texts: list[str], rng: random.Random) -> None:
        self.texts, self.rng = list(texts), rng
        rng.shuffle(self.texts)
        self.last: dict[str, float] = {}
        self.pos = 0

    def take(self, when: float) -> str | None:
        for _ in range(len(self.texts)):
            t = self.texts[self.pos % len(self.texts)]
            self.pos += 1
            if when - self.last.get(t, -1e18) >= REUSE_GAP_S:
                self.last[t] = when
                return t
        return None


def build(seed: int, args: argparse.Namespace, watchlist: Any, sentences: list[tuple[str, str]]):
    rng = random.Random(seed)
    names = {e.ticker: e.name for e in watchlist.entries}
    tickers = sorted(names)
    order = tickers[:]
    rng.shuffle(order)
    noisy, quiet = order[:2], order[2:4]
    per_day = {tk: 12.0 if tk in noisy else 0.5 if tk in quiet else 4.0 for tk in tickers}
    span = args.hours * 3600.0
    negatives = [t for t, y in sentences if y == "negative"]
    # episodes first: negative sentences for negative_share episodes are held out of the background
    n_share = args.episodes // 2
    share_sizes = [rng.choice((5, 5, 6, 6, 7, 8)) for _ in range(n_share)]
    rng.shuffle(negatives)
    episode_neg, bg_neg = negatives[:sum(share_sizes)], set(negatives[sum(share_sizes):])
    if len(episode_neg) < sum(share_sizes):
        raise SystemExit(f"not enough negative test sentences for {n_share} negative_share episodes")
    held = set(episode_neg)
    pool = TextPool([t for t, _ in sentences if t not in held], rng)
    bg_label = dict(sentences)
    kinds = ["negative_share"] * n_share + ["volume"] * (args.episodes - n_share)
    rng.shuffle(kinds)
    warmup = min(48 * 3600.0, span / 4)
    slot = (span - warmup - 2 * 3600.0) / max(len(kinds), 1)
    episodes: list[Episode] = []
    recs: list[dict[str, Any]] = []

    def item(rid: str, text: str, ticker: str | None, when: float) -> None:
        title = f"{names[ticker]}: {text}" if ticker else text
        recs.append({"id": rid, "title": title, "published_at": when, "source": "bench"})

    share_i = 0
    for k, kind in enumerate(kinds):
        start = warmup + k * slot + slot * 0.1 * rng.random()
        if k and rng.random() < 0.25:  # overlap the previous episode (another company)
            start = episodes[-1].start + 10 * 60 * rng.random()
        start += T0
        ticker = rng.choice([t for t in tickers if not episodes or t != episodes[-1].ticker])
        if kind == "negative_share":
            size, length = share_sizes[share_i], rng.uniform(20, 50) * 60
            texts = episode_neg[sum(share_sizes[:share_i]): sum(share_sizes[:share_i]) + size]
            share_i += 1
        else:
            size, length = rng.choice((8, 10, 12, 14, 20)), rng.uniform(30, 50) * 60
            texts = []
            for j in range(size):
                t = pool.take(start + j)
                if t is None:
                    raise SystemExit("sentence pool exhausted; lower --episodes or --hours")
                texts.append(t)
        ep = Episode(kind, ticker, start, start + length, size)
        for j, text in enumerate(texts):
            rid = f"ep{k}-{j}"
            item(rid, text, ticker, start + j * length / max(size - 1, 1))
            ep.item_ids.append(rid)
        episodes.append(ep)
    # background: a Poisson stream per company (+ untagged items), texts from the pool
    n = 0
    for tk in [*tickers, None]:
        rate = (sum(per_day.values()) / 3 if tk is None else per_day[tk]) / 86400.0
        t = T0 + rng.expovariate(rate)
        while t < T0 + span:
            text = pool.take(t)
            if text is not None:
                item(f"bg-{n}", text, tk, t)
                n += 1
            t += rng.expovariate(rate)
    recs.sort(key=lambda r: r["published_at"])
    neg_bg_share = sum(1 for r in recs if r["id"].startswith("bg-") and
                       bg_label.get(r["title"].split(": ", 1)[-1]) == "negative") / max(n, 1)
    return recs, episodes, {"noisy": noisy, "quiet": quiet, "background_items": n,
                            "background_negative_share": round(neg_bg_share, 3), "negatives_in_pool": len(bg_neg)}


def score(alerts: list[dict[str, Any]], episodes: list[Episode], read: dict[str, str] | None = None) -> dict[str, Any]:
    """Precision, recall and time to alert per kind. ``read``: item id -> the label the monitor gave it
    (to report how many of a missed negative-share episode's items the model read as negative)."""
    read = read or {}
    fits = {"share": ("negative_share",), "volume": KINDS}
    by_kind: dict[str, Any] = {}
    ttas_all: list[float] = []
    for kind, signal in (("negative_share", "share"), ("volume", "volume")):
        mine = [a for a in alerts if (a.get("signal") or "share") == signal]
        true_alerts, detected = 0, {}
        for a in mine:
            hit = [i for i, e in enumerate(episodes) if e.kind in fits[signal] and a["series_key"] == e.ticker
                   and e.start <= a["opened_at"] <= e.end + MATCH_AFTER_S]
            if hit:
                true_alerts += 1
            for i in hit:
                if episodes[i].kind == kind:
                    detected.setdefault(i, a["opened_at"] - episodes[i].start)
        n_eps = sum(1 for e in episodes if e.kind == kind)
        ttas = sorted(detected.values())
        ttas_all += ttas
        by_kind[kind] = {"precision": round(true_alerts / len(mine), 4) if mine else None,
                         "recall": round(len(detected) / n_eps, 4) if n_eps else None,
                         "median_seconds_to_alert": round(statistics.median(ttas), 1) if ttas else None,
                         "alerts": len(mine), "true_alerts": true_alerts, "episodes": n_eps,
                         "detected": len(detected),
                         "missed_sizes": sorted(e.size for i, e in enumerate(episodes)
                                                if e.kind == kind and i not in detected)}
        if kind == "negative_share" and read:
            neg = [sum(read.get(r) == "negative" for r in e.item_ids) for e in episodes if e.kind == kind]
            by_kind[kind]["items_read_negative"] = round(sum(neg) / max(sum(e.size for e in episodes
                                                                               if e.kind == kind), 1), 4)
            by_kind[kind]["missed_read_negative"] = sorted(
                f"{sum(read.get(r) == 'negative' for r in e.item_ids)}/{e.size}"
                for i, e in enumerate(episodes) if e.kind == kind and i not in detected)
    return {"by_kind": by_kind, "seconds_to_alert": ttas_all}


def run_seed(seed: int, args: argparse.Namespace, artifact: Path, sentences: list[tuple[str, str]]) -> dict[str, Any]:
    from finance_sentiment.config import MonitorConfig, Rule
    from finance_sentiment.entities import Watchlist
    from finance_sentiment.paths import SAMPLES
    from finance_sentiment.pipeline import Monitor
    from finance_sentiment.scoring import SentimentModel, TopicModel
    from finance_sentiment.sources import ReplaySource
    from finance_sentiment.store import SQLiteStore
    from verticore import Embedder, resolve_device

    watchlist = Watchlist.load(SAMPLES / "watchlist.csv")
    recs, episodes, info = build(seed, args, watchlist, sentences)
    rules = [Rule("negative-surge", series="entity", direction="negative", window_minutes=60, min_count=5,
                  z_threshold=3.0, min_share=0.5, cooldown_minutes=120, resolve_minutes=60, severity="high",
                  evidence=args.evidence),
             Rule("volume-spike", signal="volume", series="entity", window_minutes=60, min_count=6, factor=5.0,
                  max_p=0.001, baseline_hours=168, cooldown_minutes=180, resolve_minutes=60, severity="medium")]
    cfg = MonitorConfig(rules=rules)
    device = resolve_device(args.device)
    embedder = Embedder("default", device=device, max_length=128)
    sentiment = SentimentModel.load(artifact, device=device)
    topics = TopicModel(embedder, cfg.topics, threshold=cfg.zero_shot_threshold)
    t = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteStore(Path(tmp) / "alerts.db")
        mon = Monitor(store, sentiment, topics, watchlist, cfg, embedder)
        for batch in ReplaySource(recs, speed=0).batches(batch_size=64, batch_seconds=600):
            mon.process(batch, source="bench", now=batch[-1]["published_at"])
        mon.tick(recs[-1]["published_at"] + 6 * 3600)
        alerts = [a for a in store.list_alerts(limit=100_000) if a["series_kind"] == "entity"]
        dropped = store.count_items(True)
        mon.close()
        import sqlite3

        with sqlite3.connect(Path(tmp) / "alerts.db") as con:
            read = dict(con.execute("SELECT item_id, sentiment FROM items").fetchall())
        con.close()
    out = score(alerts, episodes, read)
    out.update({"seed": seed, "items": len(recs), "alerts": len(alerts), "duplicates_dropped": dropped,
                "wall_seconds": round(time.perf_counter() - t, 1), **info,
                "episodes": [e.to_dict() for e in episodes]})
    return out


def _mean(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return round(statistics.fmean(vals), 4) if vals else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="sentiment artifact dir (default: the best bench-trained PhraseBank model)")
    ap.add_argument("--seeds", default="13,14,15", help="comma list: one stream per seed")
    ap.add_argument("--episodes", type=int, default=40, help="injected episodes per seed (half of each kind)")
    ap.add_argument("--hours", type=float, default=192.0, help="stream length (synthetic time)")
    ap.add_argument("--quick", action="store_true", help="one seed, 8 episodes over 96 h, quick model if none exists")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--evidence", default="label", choices=["label", "probability"],
                    help="how an item counts towards the negative-share rule (see finance_sentiment.detect)")
    ap.add_argument("--name", default="finance_alerts", help="results file name (bench/results/<name>.json)")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.quick:
        seeds, args.episodes, args.hours = seeds[:1], 8, 96.0
    artifact = sentiment_artifact(args.model, args.quick)
    sentences = test_sentences()
    t0 = time.perf_counter()
    per_seed = [run_seed(s, args, artifact, sentences) for s in seeds]
    by_kind = {k: {m: _mean([r["by_kind"][k][m] for r in per_seed]) for m in ("precision", "recall")}
               for k in KINDS}
    for k in KINDS:  # per-kind median time to alert: the mean of the seeds' medians
        by_kind[k]["median_seconds_to_alert"] = _mean([r["by_kind"][k]["median_seconds_to_alert"] for r in per_seed])
        for count in ("episodes", "detected", "alerts"):
            by_kind[k][count] = sum(r["by_kind"][k][count] for r in per_seed)
    by_kind["negative_share"]["items_read_negative"] = _mean(
        [r["by_kind"]["negative_share"].get("items_read_negative") for r in per_seed])
    all_tta = sorted(x for r in per_seed for x in r["seconds_to_alert"])
    result = {"precision": _mean([by_kind[k]["precision"] for k in KINDS]),
              "recall": _mean([by_kind[k]["recall"] for k in KINDS]),
              "median_seconds_to_alert": round(statistics.median(all_tta), 1) if all_tta else None,
              "by_kind": by_kind, "seeds": seeds, "episodes": sum(len(r["episodes"]) for r in per_seed),
              "episodes_per_seed": args.episodes, "hours": args.hours, "model": str(artifact),
              "negative_share_evidence": args.evidence,
              "matching": {"after_end_s": MATCH_AFTER_S, "share_alert_fits": ["negative_share"],
                           "volume_alert_fits": list(KINDS)},
              "seconds": round(time.perf_counter() - t0, 1),
              "per_seed": [{k: v for k, v in r.items() if k != "seconds_to_alert"} for r in per_seed]}
    print_table(["seed", "kind", "episodes", "detected", "alerts", "precision", "recall", "median s", "missed sizes",
                 "missed: read negative"],
                [[r["seed"], k, r["by_kind"][k]["episodes"], r["by_kind"][k]["detected"], r["by_kind"][k]["alerts"],
                  r["by_kind"][k]["precision"], r["by_kind"][k]["recall"], r["by_kind"][k]["median_seconds_to_alert"],
                  r["by_kind"][k]["missed_sizes"], r["by_kind"][k].get("missed_read_negative", "")]
                 for r in per_seed for k in KINDS])
    print_table(["kind", "precision", "recall", "median s to alert"],
                [[k, by_kind[k]["precision"], by_kind[k]["recall"], by_kind[k]["median_seconds_to_alert"]]
                 for k in KINDS] + [["all", result["precision"], result["recall"], result["median_seconds_to_alert"]]])
    if args.quick:
        from verticore.io import atomic_write_json

        print(f"wrote {atomic_write_json(Path(tempfile.gettempdir()) / 'finance_alerts_quick.json', result)}")
    else:
        write_result(args.name, result)


if __name__ == "__main__":
    main()
