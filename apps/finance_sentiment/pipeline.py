"""The monitor: ingest -> validate -> dedupe -> classify -> store -> detect -> alert -> outbox."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from verticore.errors import ArtifactError, DataError

from .config import MonitorConfig, load_config
from .dedupe import Deduplicator
from .detect import AlertEvent, SurgeDetector
from .entities import Watchlist
from .items import NewsItem, ScoredItem
from .paths import SAMPLES, AppPaths
from .scoring import SentimentModel, TopicModel
from .store import NewsStore, SQLiteStore
from .webhooks import build_payload, idempotency_key

log = logging.getLogger("finance_sentiment")
DETECTOR_KEY = "detector_state"


@dataclass
class ProcessResult:
    """What one :meth:`Monitor.process` call did."""

    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    skipped_ids: int = 0
    events: list[AlertEvent] = field(default_factory=list)
    items: list[ScoredItem] = field(default_factory=list)

    @property
    def opened(self) -> int:
        return sum(1 for e in self.events if e.kind == "opened")

    @property
    def resolved(self) -> int:
        return sum(1 for e in self.events if e.kind == "resolved")

    def summary(self) -> dict[str, int]:
        return {"accepted": self.accepted, "duplicates": self.duplicates, "rejected": self.rejected,
                "skipped_ids": self.skipped_ids, "alerts_opened": self.opened, "alerts_resolved": self.resolved}


class Monitor:
    """Runs the whole pipeline over batches of raw news records.

    Every stage is batched (one classifier pass per batch), and each batch is committed in one
    transaction together with the detector state, alert changes and outbox rows, so a crash
    never leaves an alert without its deliveries or items the detector has not seen.
    """

    def __init__(self, store: NewsStore, sentiment: SentimentModel, topics: TopicModel, watchlist: Watchlist,
                 config: MonitorConfig | None = None, embedder: Any = None, *, dashboard_url: str | None = None) -> None:
        self.store = store
        self.sentiment = sentiment
        self.topics = topics
        self.watchlist = watchlist
        self.config = config or MonitorConfig()
        self.embedder = embedder if embedder is not None else topics.embedder
        self.dashboard_url = dashboard_url
        fp = getattr(self.embedder, "fingerprint", None)
        dim = int(getattr(self.embedder, "dimension", 384))
        self.deduper = Deduplicator(store, dimension=dim, threshold=self.config.near_duplicate_threshold,
                                    window_hours=self.config.dedupe_window_hours, model_fingerprint=fp)
        self.detector = SurgeDetector(self.config.rules)
        self.detector.load_json(store.kv_get(DETECTOR_KEY))

    # -- construction ----------------------------------------------------------------
    @classmethod
    def open(cls, paths: AppPaths | str | Path, *, config: MonitorConfig | None = None, device: str = "auto",
             batch_size: int = 64) -> "Monitor":
        """Open the monitor installed at ``paths`` (models, watchlist, config, database).

        Raises :class:`ArtifactError` naming the fix when the sentiment model is missing.
        """
        from verticore import Embedder

        paths = paths if isinstance(paths, AppPaths) else AppPaths(Path(paths))
        if config is None:
            config = load_config(paths.config) if paths.config.exists() else MonitorConfig()
        if not (paths.sentiment_model / "labels.json").exists():
            raise ArtifactError(f"no sentiment model at {paths.sentiment_model}; run `finance-sentiment train` "
                                f"or `finance-sentiment demo` first")
        wl_path = paths.watchlist if paths.watchlist.exists() else SAMPLES / "watchlist.csv"
        watchlist = Watchlist.load(wl_path)
        embedder = Embedder("default", device=device, batch_size=batch_size, max_length=128)
        sentiment = SentimentModel.load(paths.sentiment_model, device=device, batch_size=batch_size,
                                        max_sentences=config.max_sentences)
        topics = TopicModel.load(embedder, config.topics, paths.topic_model, threshold=config.zero_shot_threshold)
        store = SQLiteStore(paths.db)
        mon = cls(store, sentiment, topics, watchlist, config, embedder)
        mon.deduper.warm(embedder)
        return mon

    # -- pipeline --------------------------------------------------------------------
    def validate(self, records: Iterable[Mapping[str, Any] | NewsItem], source: str, now: float) -> tuple[list[NewsItem], int, int]:
        """Turn raw records into items; bad ones are logged, recorded in ``rejected`` and skipped."""
        items: list[NewsItem] = []
        rejected = 0
        for rec in records:
            if isinstance(rec, NewsItem):
                items.append(rec)
                continue
            try:
                items.append(NewsItem.from_dict(rec, source=rec.get("source") if isinstance(rec, Mapping) and rec.get("source") else source,
                                                now=now, max_body_chars=self.config.max_body_chars))
            except DataError as exc:
                rejected += 1
                log.warning("rejected item from %s: %s", source, exc)
                self.store.record_rejected(source, str(exc), repr(rec)[:2000])
        seen: set[str] = set()
        existing = self.store.existing_item_ids([i.item_id for i in items])
        out: list[NewsItem] = []
        skipped = 0
        for it in items:
            if it.item_id in existing or it.item_id in seen:
                skipped += 1
                log.info("skipped item %r from %s: id already ingested", it.item_id, it.source)
                continue
            seen.add(it.item_id)
            out.append(it)
        return out, rejected, skipped

    def process(self, records: Iterable[Mapping[str, Any] | NewsItem], *, source: str = "api", now: float | None = None) -> ProcessResult:
        """Run one batch through the pipeline and commit it; returns counts and alert events."""
        now = time.time() if now is None else now
        items, rejected, skipped = self.validate(records, source, now)
        result = ProcessResult(rejected=rejected, skipped_ids=skipped)
        if not items:
            return result
        emb = np.asarray(self.embedder.encode([it.title for it in items]), dtype=np.float32)
        dups = self.deduper.find(items, emb)
        originals = [i for i, (_, d) in enumerate(dups) if d is None]
        orig_items = [items[i] for i in originals]
        sent = self.sentiment.score([it.title for it in orig_items], [it.body for it in orig_items])
        topics = self.topics.assign([it.title for it in orig_items], emb[originals] if originals else None)
        scored: list[ScoredItem] = []
        by_index: dict[int, ScoredItem] = {}
        k = 0
        for i, (it, (h, dup)) in enumerate(zip(items, dups)):
            s = ScoredItem(it, h)
            if dup is None:
                a = sent[k]
                s.sentiment, s.sentiment_score, s.probabilities, s.evidence = a.label, a.score, a.probabilities, a.evidence
                s.topics = topics[k]
                s.entities = self.watchlist.tickers_in(f"{it.title} {it.body}")
                s.model_version = self.sentiment.version
                s.topic_model_version = self.topics.version
                k += 1
            by_index[i] = s
            scored.append(s)
        try:
            with self.store.transaction():
                # originals first so in-batch duplicates can point at their row ids
                self.store.insert_items([s for s, (_, d) in zip(scored, dups) if d is None])
                for i, (s, (_, d)) in enumerate(zip(scored, dups)):
                    if isinstance(d, str):
                        s.duplicate_of = by_index[int(d.split(":")[1])].rowid
                    elif d is not None:
                        s.duplicate_of = d
                self.store.insert_items([s for s in scored if s.is_duplicate])
                events = self.detector.observe(scored)
                self._handle(events, now)
                self.store.kv_set(DETECTOR_KEY, self.detector.to_json())
        except BaseException:
            self.detector = SurgeDetector(self.config.rules)
            self.detector.load_json(self.store.kv_get(DETECTOR_KEY))
            raise
        self.deduper.remember([s.rowid for s in scored if not s.is_duplicate], emb[originals],
                              [s.item.published_at for s in scored if not s.is_duplicate])
        result.accepted = len(scored) - sum(1 for s in scored if s.is_duplicate)
        result.duplicates = sum(1 for s in scored if s.is_duplicate)
        result.events = events
        result.items = scored
        return result

    def tick(self, now: float | None = None) -> list[AlertEvent]:
        """Advance detection time without new items (resolves episodes that went quiet)."""
        now = time.time() if now is None else now
        with self.store.transaction():
            events = self.detector.tick(now)
            if events:
                self._handle(events, now)
                self.store.kv_set(DETECTOR_KEY, self.detector.to_json())
        return events

    def _handle(self, events: Sequence[AlertEvent], now: float) -> None:
        """Persist alert changes and queue webhook deliveries for opened/resolved events."""
        for ev in events:
            alert_id = self.store.upsert_alert(ev.alert)
            if ev.kind not in ("opened", "resolved"):
                continue
            log.warning("alert %s (%s): %s", ev.kind, ev.alert["rule"], ev.alert["summary"])
            for target in self.config.webhooks:
                if not target.enabled:
                    continue
                key = idempotency_key(ev.alert["alert_key"], ev.kind, target.name)
                payload = build_payload(ev.alert, ev.kind, target.format, key, self.dashboard_url)
                self.store.enqueue(alert_id, ev.kind, target.name, target.url, target.format, payload, key, now)

    # -- ad hoc ----------------------------------------------------------------------
    def score_text(self, text: str, title: str | None = None) -> dict[str, Any]:
        """Score one text without storing it (the dashboard's "score this text" box)."""
        from .text import split_sentences

        full = f"{title} {text}" if title else text
        if title is None:
            sents = split_sentences(text)
            if not sents:
                raise DataError("nothing to score: the text is empty")
            title, text = sents[0], " ".join(sents[1:])
        item = NewsItem.from_dict({"title": title, "body": text})
        a = self.sentiment.score([item.title], [item.body])[0]
        emb = np.asarray(self.embedder.encode([item.title]), dtype=np.float32)
        return {"label": a.label, "score": a.score, "probabilities": a.probabilities,
                "evidence": [e.to_dict() for e in a.evidence], "sentences": a.sentences,
                "topics": self.topics.assign([item.title], emb)[0], "entities": self.watchlist.tickers_in(full),
                "model_version": self.sentiment.version}

    def close(self) -> None:
        close = getattr(self.store, "close", None)
        if close:
            close()
