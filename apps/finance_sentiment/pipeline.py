"""The monitor: ingest -> validate -> dedupe -> classify -> store -> detect -> alert -> outbox."""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from verticore.errors import ArtifactError, DataError

from .alerting import Notification, Notifier, group_payload
from .config import MonitorConfig, load_config
from .dedupe import Deduplicator
from .detect import AlertEvent, SurgeDetector
from .entities import EntityExtractor, TokenTagger, Watchlist, entity_kind
from .items import MAX_FUTURE_SKEW_S, MAX_ITEM_AGE_S, NewsItem, ScoredItem, mark_language
from .paths import SAMPLES, AppPaths
from .scoring import SentimentModel, TopicModel
from .store import NewsStore, SQLiteStore
from .targets import TargetSentimentModel

if TYPE_CHECKING:
    from .sources import FolderSource

log = logging.getLogger("finance_sentiment")
#: the registry entry the monitor's sentiment model follows (``verticore retrain --app finance_sentiment --model sentiment``)
REGISTRY_APP, REGISTRY_MODEL = "finance_sentiment", "sentiment"
DETECTOR_KEY = "detector_state"
DETECTOR_GEN_KEY = "detector_generation"
NOTIFIER_KEY = "notifier_state"  # grouping state: saved with the detector, under the same generation


class _Raced(Exception):
    """Another process stored some of this batch's ids between validation and commit: redo the batch."""


@dataclass
class ProcessResult:
    """What one :meth:`Monitor.process` call did."""

    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    skipped_ids: int = 0
    events: list[AlertEvent] = field(default_factory=list)
    items: list[ScoredItem] = field(default_factory=list)
    notifications: list[Notification] = field(default_factory=list)

    @property
    def opened(self) -> int:
        return sum(1 for e in self.events if e.kind == "opened")

    @property
    def resolved(self) -> int:
        return sum(1 for e in self.events if e.kind == "resolved")

    def summary(self) -> dict[str, int]:
        return {"accepted": self.accepted, "duplicates": self.duplicates, "rejected": self.rejected,
                "skipped_ids": self.skipped_ids, "alerts_opened": self.opened, "alerts_resolved": self.resolved}


def registry_sentiment_loader(**load_options: Any) -> Callable[[Path], SentimentModel]:
    """The loader of a registry sentiment version (``<version>/artifact``): :meth:`SentimentModel.load`
    with ``load_options``, its stored model version naming the registry version (``sentiment/registry-v3``)."""
    def load(artifact_dir: Path) -> SentimentModel:
        return SentimentModel.load(artifact_dir, version=f"sentiment/registry-v{int(artifact_dir.parent.name)}",
                                   **load_options)

    return load


def watch_registry_sentiment(registry: Any, loader: Callable[[Path], Any], *, interval: float = 2.0) -> Any:
    """A loaded :class:`verticore.registry.ModelHandle` following the production alias of
    ``finance_sentiment/sentiment`` in ``registry`` (a ``ModelRegistry`` or its folder, default
    ``$VERTICORE_HOME/registry``); None when there is no production version or it does not load
    (the caller then keeps its folder model; the reason is logged)."""
    from verticore.errors import VerticoreError
    from verticore.registry.store import ModelRegistry

    reg = registry if isinstance(registry, ModelRegistry) else ModelRegistry(registry)
    try:
        if "production" not in reg.aliases(REGISTRY_APP, REGISTRY_MODEL):
            return None
        handle = reg.watch(REGISTRY_APP, REGISTRY_MODEL, loader, interval=interval)
        handle.get()  # load now: a broken production version falls back here, not mid-batch
    except VerticoreError as exc:
        log.warning("sentiment model: not following the registry (%s)", str(exc).splitlines()[0])
        return None
    log.info("sentiment model: following %s", handle)
    return handle


class Monitor:
    """Runs the whole pipeline over batches of raw news records.

    Every stage is batched (one classifier pass per batch), and each batch is committed in one
    transaction together with the detector state, alert changes, outbox rows, rejected records and
    the source's read position (``on_commit``), so a crash never leaves an alert without its
    deliveries, items the detector has not seen, or a read position ahead of the stored items.

    Detection state lives in the database: each transaction first reloads it when another process
    (``watch`` and ``serve`` on the same directory) has changed it since, so all writers share one
    detector and one burst gives one alert.

    ``extractor`` (an :class:`~finance_sentiment.entities.EntityExtractor`, or a bare NER tagger wrapped
    with the config's ``discovered_entities`` settings) adds organisations found by the NER model:
    watchlist names it finds link to their ticker, others become ``discovered`` entities (``org:...``)
    with their own trends; their alerts stay off unless ``discovered_entities.alerts`` is on. Items
    that look non-English or have no words (``meta["non_english"]`` / ``meta["no_words"]``) are
    stored and scored with low confidence but left out of surge statistics unless
    ``non_english_in_surges`` is on.
    """

    def __init__(self, store: NewsStore, sentiment: SentimentModel, topics: TopicModel, watchlist: Watchlist,
                 config: MonitorConfig | None = None, embedder: Any = None, *, dashboard_url: str | None = None,
                 extractor: EntityExtractor | TokenTagger | None = None,
                 target_sentiment: TargetSentimentModel | None = None) -> None:
        self.store = store
        #: entity-level sentiment for items naming several watched companies (None: text-level only)
        self.target_sentiment = target_sentiment
        self._sentiment = sentiment
        self._sentiment_handle: Any = None  # a verticore.registry.ModelHandle when following the registry
        self.topics = topics
        self.watchlist = watchlist
        self.config = config or MonitorConfig()
        self.embedder = embedder if embedder is not None else topics.embedder
        self.dashboard_url = dashboard_url
        disc = self.config.discovered_entities
        if extractor is not None and not isinstance(extractor, EntityExtractor):
            extractor = EntityExtractor(extractor, watchlist, types=disc.types, min_score=disc.min_score)
        self.extractor: EntityExtractor | None = extractor
        fp = getattr(self.embedder, "fingerprint", None)
        dim = int(getattr(self.embedder, "dimension", 384))
        self.deduper = Deduplicator(store, dimension=dim, threshold=self.config.near_duplicate_threshold,
                                    window_hours=self.config.dedupe_window_hours, model_fingerprint=fp)
        self.detector = SurgeDetector(self.config.rules, max_skew_s=MAX_FUTURE_SKEW_S)
        self.notifier = Notifier(self.config.notify, self.config.inhibit_rules)
        self._detector_gen: Any = None
        with store.transaction():
            self._sync_detector()

    # -- the sentiment model: fixed, or following the model registry -------------------
    @property
    def sentiment(self) -> SentimentModel:
        """The sentiment model now: the registry's production version when following it (checked at
        most once per watch interval), else the fixed one. Take it once per batch or request."""
        if self._sentiment_handle is not None:
            return self._sentiment_handle.get()
        return self._sentiment

    @sentiment.setter
    def sentiment(self, model: SentimentModel) -> None:
        self._sentiment, self._sentiment_handle = model, None

    @property
    def sentiment_handle(self) -> Any:
        """The :class:`verticore.registry.ModelHandle` the sentiment model follows (None: a fixed model)."""
        return self._sentiment_handle

    def follow_registry(self, registry: Any = None, loader: Callable[[Path], SentimentModel] | None = None, *,
                        interval: float = 2.0) -> bool:
        """Score with the registry's production sentiment version from now on, following promotions
        (a batch already being scored finishes on its model). See :func:`watch_registry_sentiment`.
        False (current model kept) when the registry has no usable production version."""
        handle = watch_registry_sentiment(registry, loader or registry_sentiment_loader(), interval=interval)
        if handle is None:
            return False
        self._sentiment_handle = handle
        return True

    # -- construction ----------------------------------------------------------------
    @classmethod
    def open(cls, paths: AppPaths | str | Path, *, config: MonitorConfig | None = None, device: str = "auto",
             batch_size: int = 64, registry: Any = None, watch_interval: float = 2.0) -> "Monitor":
        """Open the monitor installed at ``paths`` (models, watchlist, config, database).

        The sentiment model is the model registry's production version when there is one
        (``registry``: a ``ModelRegistry`` or its folder, default ``$VERTICORE_HOME/registry``;
        ``False`` to ignore it), followed without a restart; else ``models/sentiment``.
        Raises :class:`ArtifactError` naming the fix when neither exists.
        """
        from verticore import Embedder

        paths = paths if isinstance(paths, AppPaths) else AppPaths(Path(paths))
        if config is None:
            config = load_config(paths.config) if paths.config.exists() else MonitorConfig()
        follow = None if registry is False else watch_registry_sentiment(
            registry, registry_sentiment_loader(device=device, batch_size=batch_size,
                                                max_sentences=config.max_sentences), interval=watch_interval)
        if follow is None and not (paths.sentiment_model / "labels.json").exists():
            raise ArtifactError(f"no sentiment model at {paths.sentiment_model}; run `finance-sentiment train` "
                                f"or `finance-sentiment demo` first")
        wl_path = paths.watchlist if paths.watchlist.exists() else SAMPLES / "watchlist.csv"
        watchlist = Watchlist.load(wl_path)
        embedder = Embedder("default", device=device, batch_size=batch_size, max_length=128)
        sentiment = follow.get() if follow is not None else SentimentModel.load(
            paths.sentiment_model, device=device, batch_size=batch_size, max_sentences=config.max_sentences)
        topics = TopicModel.load(embedder, config.topics, paths.topic_model, threshold=config.zero_shot_threshold)
        extractor = None
        if config.discovered_entities.model:
            from verticore import TokenClassifier

            # a relative path is the monitor home's (models/ner), else a path or model name as given
            model = config.discovered_entities.model
            local = paths.root / model
            extractor = TokenClassifier(local if local.exists() else model, device=device, batch_size=batch_size)
        target = None
        if (paths.target_sentiment_model / "labels.json").exists():  # `finance-sentiment train-targets`
            target = TargetSentimentModel(paths.target_sentiment_model)
        store = SQLiteStore(paths.db)
        mon = cls(store, sentiment, topics, watchlist, config, embedder, extractor=extractor, target_sentiment=target)
        mon._sentiment_handle = follow
        mon.deduper.warm(embedder)
        return mon

    # -- pipeline --------------------------------------------------------------------
    def _sync_detector(self) -> None:
        """Reload the detector when the stored state is newer than ours (call inside a transaction)."""
        gen = self.store.kv_get(DETECTOR_GEN_KEY)
        if self._detector_gen is not None and gen == self._detector_gen:
            return
        self.detector = SurgeDetector(self.config.rules, max_skew_s=MAX_FUTURE_SKEW_S)
        self.detector.load_dict(self.store.kv_get(DETECTOR_KEY))
        self.notifier = Notifier(self.config.notify, self.config.inhibit_rules)
        self.notifier.load_dict(self.store.kv_get(NOTIFIER_KEY))
        self._detector_gen = gen if gen is not None else 0

    def _save_detector(self) -> None:
        gen = int(self.store.kv_get(DETECTOR_GEN_KEY) or 0) + 1  # serialised by the write transaction
        self.store.kv_set(DETECTOR_KEY, self.detector.to_dict())
        self.store.kv_set(NOTIFIER_KEY, self.notifier.to_dict())
        self.store.kv_set(DETECTOR_GEN_KEY, gen)
        self._detector_gen = gen

    def _validate(self, records: Iterable[Mapping[str, Any] | NewsItem], source: str,
                  now: float) -> tuple[list[NewsItem], list[tuple[str, str, str]], int]:
        """Items, rejected ``(source, reason, raw)`` and the number skipped as already stored.
        An item's identity is ``(source, item_id)``: two feeds may reuse the same guid."""
        items: list[NewsItem] = []
        rejects: list[tuple[str, str, str]] = []
        for rec in records:
            if isinstance(rec, NewsItem):
                items.append(mark_language(rec))
                continue
            try:
                items.append(NewsItem.from_dict(rec, source=rec.get("source") if isinstance(rec, Mapping) and rec.get("source") else source,
                                                now=now, max_body_chars=self.config.max_body_chars,
                                                max_skew_s=MAX_FUTURE_SKEW_S, max_age_s=MAX_ITEM_AGE_S))
            except DataError as exc:
                log.warning("rejected item from %s: %s", source, exc)
                rejects.append((source, str(exc), repr(rec)[:2000]))
        seen: set[tuple[str, str]] = set()
        existing = self.store.existing_item_ids([(i.source, i.item_id) for i in items])
        out: list[NewsItem] = []
        skipped = 0
        for it in items:
            k = (it.source, it.item_id)
            if k in existing or k in seen:
                skipped += 1
                log.info("skipped item %r from %s: id already ingested", it.item_id, it.source)
                continue
            seen.add(k)
            out.append(it)
        return out, rejects, skipped

    def validate(self, records: Iterable[Mapping[str, Any] | NewsItem], source: str, now: float) -> tuple[list[NewsItem], int, int]:
        """Turn raw records into items; bad ones are logged, recorded in ``rejected`` and skipped."""
        items, rejects, skipped = self._validate(records, source, now)
        with self.store.transaction():
            for r in rejects:
                self.store.record_rejected(*r)
        return items, len(rejects), skipped

    def process(self, records: Iterable[Mapping[str, Any] | NewsItem], *, source: str = "api", now: float | None = None,
                on_commit: Callable[[], None] | None = None) -> ProcessResult:
        """Run one batch through the pipeline and commit it; returns counts and alert events.

        ``on_commit`` runs inside the same transaction (a source marks the batch as read there), so
        the batch is stored and marked read together or not at all. Items whose ``(source, id)``
        is already stored are skipped, so re-processing a batch after a crash is harmless."""
        now = time.time() if now is None else now
        records = list(records)
        for _ in range(5):
            try:
                return self._process_once(records, source, now, on_commit)
            except _Raced:
                log.info("another process stored part of this batch meanwhile; processing it again")
        raise DataError("batch could not be committed: other processes kept storing the same items")

    def ingest(self, src: "FolderSource", *, batch_size: int = 64, now: float | None = None) -> Iterator[ProcessResult]:
        """Process what is new in a :class:`~finance_sentiment.sources.FolderSource`, batch by batch;
        each batch's read position is committed with its items."""
        for b in src.batches(batch_size):
            yield self.process(b.records, source=f"file:{Path(b.path).name}", now=now,
                               on_commit=lambda b=b: src.commit(b))

    def _process_once(self, records: list[Any], source: str, now: float, on_commit: Callable[[], None] | None) -> ProcessResult:
        items, rejects, skipped = self._validate(records, source, now)
        result = ProcessResult(rejected=len(rejects), skipped_ids=skipped)
        if not items:
            with self.store.transaction():
                for r in rejects:
                    self.store.record_rejected(*r)
                if on_commit is not None:
                    on_commit()
            return result
        emb = np.asarray(self.embedder.encode([it.title for it in items]), dtype=np.float32)
        dups = self.deduper.find(items, emb)
        originals = [i for i, (_, d) in enumerate(dups) if d is None]
        orig_items = [items[i] for i in originals]
        sentiment_model = self.sentiment  # once per batch: a promotion meanwhile applies from the next batch
        sent = sentiment_model.score([it.title for it in orig_items], [it.body for it in orig_items])
        topics = self.topics.assign([it.title for it in orig_items], emb[originals] if originals else None)
        found = self.extractor.extract([it.text for it in orig_items]) if self.extractor is not None else None
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
                if found is not None:
                    s.entities += [f.key for f in found[k] if f.key not in s.entities]
                    disc = [f.to_dict() for f in found[k] if f.kind == "discovered"]
                    if disc:
                        it.meta["discovered_entities"] = disc
                if a.note:
                    it.meta["sentiment_note"] = a.note
                s.model_version = sentiment_model.version
                s.topic_model_version = self.topics.version
                k += 1
            by_index[i] = s
            scored.append(s)
        self._score_targets(scored)
        try:
            with self.store.transaction():
                if self.store.existing_item_ids([(s.item.source, s.item.item_id) for s in scored]):
                    raise _Raced()
                self._sync_detector()
                for r in rejects:
                    self.store.record_rejected(*r)
                # originals first so in-batch duplicates can point at their row ids
                self.store.insert_items([s for s, (_, d) in zip(scored, dups) if d is None])
                for i, (s, (_, d)) in enumerate(zip(scored, dups)):
                    if isinstance(d, str):
                        s.duplicate_of = by_index[int(d.split(":")[1])].rowid
                    elif d is not None:
                        s.duplicate_of = d
                self.store.insert_items([s for s in scored if s.is_duplicate])
                events = self.detector.observe(self._for_detector(scored), now=now)
                # the notifier's clock is event time (the batch's latest item, never past the clock's skew)
                times = [min(s.item.published_at, now + MAX_FUTURE_SKEW_S) for s in scored
                         if not s.is_duplicate and np.isfinite(s.item.published_at)]
                notes = self._handle(events, max(times, default=-np.inf), now)
                self._save_detector()
                if on_commit is not None:
                    on_commit()
        except BaseException:
            self._detector_gen = None  # in-memory state may be ahead of the database: reload next time
            for s in scored:
                s.rowid = None
            raise
        self.deduper.remember([s.rowid for s in scored if not s.is_duplicate], emb[originals],
                              [s.item.published_at for s in scored if not s.is_duplicate])
        result.accepted = len(scored) - sum(1 for s in scored if s.is_duplicate)
        result.duplicates = sum(1 for s in scored if s.is_duplicate)
        result.events = events
        result.items = scored
        result.notifications = notes
        return result

    def process_scored(self, scored: Sequence[ScoredItem], *, now: float | None = None) -> ProcessResult:
        """Store, detect and notify for items that are already scored (replays of labelled streams,
        benches, tests): the detection/alerting half of :meth:`process`, in one transaction. Items
        whose ``(source, id)`` is already stored are skipped."""
        now = time.time() if now is None else now
        result = ProcessResult()
        try:
            with self.store.transaction():
                existing = self.store.existing_item_ids([(s.item.source, s.item.item_id) for s in scored])
                fresh = [s for s in scored if (s.item.source, s.item.item_id) not in existing]
                result.skipped_ids = len(scored) - len(fresh)
                self._sync_detector()
                self.store.insert_items([s for s in fresh if not s.is_duplicate])
                self.store.insert_items([s for s in fresh if s.is_duplicate])
                result.events = self.detector.observe(self._for_detector(fresh), now=now)
                times = [min(s.item.published_at, now + MAX_FUTURE_SKEW_S) for s in fresh
                         if not s.is_duplicate and np.isfinite(s.item.published_at)]
                result.notifications = self._handle(result.events, max(times, default=-np.inf), now)
                self._save_detector()
        except BaseException:
            self._detector_gen = None
            raise
        result.items = list(fresh)
        result.accepted = sum(1 for s in fresh if not s.is_duplicate)
        result.duplicates = len(fresh) - result.accepted
        return result

    def _score_targets(self, scored: Sequence[ScoredItem]) -> None:
        """Give each watched company of an item naming two or more its own sentiment (one batch)."""
        if self.target_sentiment is None:
            return
        pairs, where = [], []
        for s in scored:
            entries = [(e, entry) for e in s.entities if (entry := self.watchlist.get(e)) is not None]
            if s.is_duplicate or len(entries) < 2:
                continue
            for tk, entry in entries:
                pairs.append((entry.name, s.item.title))
                where.append((s, tk))
        for (s, tk), (label, score) in zip(where, self.target_sentiment.score(pairs)):
            s.entity_sentiment[tk] = {"label": label, "score": round(score, 4)}
            s.item.meta["entity_sentiment"] = s.entity_sentiment  # stored with the item

    def _for_detector(self, scored: Sequence[ScoredItem]) -> list[ScoredItem]:
        """What surge statistics see: without non-English / wordless items (unless configured) and, while
        their alerts are off, without discovered entities (those items still count for topics and ``all``)."""
        out: list[ScoredItem] = []
        alerts_for_discovered = self.config.discovered_entities.alerts
        for s in scored:
            if not self.config.non_english_in_surges and (s.item.meta.get("non_english") or s.item.meta.get("no_words")):
                continue
            if not alerts_for_discovered and any(entity_kind(e) == "discovered" for e in s.entities):
                s = replace(s, entities=[e for e in s.entities if entity_kind(e) != "discovered"])
            out.append(s)
        return out

    def tick(self, now: float | None = None) -> list[AlertEvent]:
        """Advance detection time without new items: resolves episodes that went quiet and sends the
        group notifications that fell due (group_wait, group_interval, repeat_interval, silences ending)."""
        now = time.time() if now is None else now
        try:
            with self.store.transaction():
                self._sync_detector()
                before = json.dumps(self.notifier.groups, sort_keys=True)
                events = self.detector.tick(now)
                notes = self._handle(events, now, now)
                # a tick that changed nothing writes nothing (watch ticks every few seconds)
                if events or notes or json.dumps(self.notifier.groups, sort_keys=True) != before:
                    self._save_detector()
        except BaseException:
            self._detector_gen = None
            raise
        return events

    def _handle(self, events: Sequence[AlertEvent], clock: float, now: float) -> list[Notification]:
        """Persist alert changes (with whether each is silenced or inhibited), let the notifier group
        them, and queue the notifications due by event time ``clock`` for every webhook target
        (inside the caller's transaction)."""
        notes: list[Notification] = []
        for ev in events:
            alert = ev.alert
            # slots before this event are decided first, as if every item had come in its own batch:
            # the same stream gives the same groups and keys however it is split
            notes += self.notifier.flush(float(alert["updated_at"]), self.store)
            self.store.upsert_alert(alert)
            if ev.kind != "resolved":
                at = float(alert["updated_at"])
                self.store.mark_alert_muted(alert["alert_key"], *self.notifier.muted(alert, at, self.store))
            if ev.kind != "updated":
                log.warning("alert %s (%s): %s", ev.kind, alert["rule"], alert["summary"])
            self.notifier.add(alert, ev.kind)
        notes += self.notifier.flush(clock, self.store)
        for note in notes:
            alerts = {k: a for k in note.firing + note.resolved if (a := self.store.get_alert(k)) is not None}
            if not alerts:
                continue
            first = alerts.get((note.firing + note.resolved)[0]) or next(iter(alerts.values()))
            log.warning("notify %s group %s: %d firing, %d resolved", note.event, note.group, len(note.firing),
                        len(note.resolved))
            for target in self.config.webhooks:
                if not target.enabled:
                    continue
                key = note.key(target.name)
                payload = group_payload(note, alerts, target.format, key, self.dashboard_url)
                self.store.enqueue(int(first["id"]), note.event, target.name, target.url, target.format, payload, key, now)
        return notes

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
        sentiment_model = self.sentiment  # once per request (see process)
        a = sentiment_model.score([item.title], [item.body])[0]
        emb = np.asarray(self.embedder.encode([item.title]), dtype=np.float32)
        entities = self.watchlist.tickers_in(full)
        if self.extractor is not None:
            entities += [f.key for f in self.extractor.extract([item.text])[0] if f.key not in entities]
        return {"label": a.label, "score": a.score, "probabilities": a.probabilities,
                "evidence": [e.to_dict() for e in a.evidence], "sentences": a.sentences,
                "topics": self.topics.assign([item.title], emb)[0], "entities": entities,
                "model_version": sentiment_model.version, "note": a.note}

    def close(self) -> None:
        close = getattr(self.store, "close", None)
        if close:
            close()
