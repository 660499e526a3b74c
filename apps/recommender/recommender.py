"""The recommender: text-embedding retrieval over FAISS, CF blending, MMR re-ranking, explanations."""
from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from verticore.errors import ArtifactError, DataError
from verticore.inference.component import Component, register_component
from verticore.io import atomic_write_json, read_json

from .catalog import Catalog, Filters
from .cf import EASE
from .interactions import EVENT_WEIGHTS, Interactions, append_rows, repair_tail
from .profiles import Interest, decay_weights, interleave, multi_interest, weighted_mean
from .rerank import Reranker, mmr, popularity_prior
from .rerank import zscore as _z

log = logging.getLogger(__name__)

MODES = ("text", "hybrid", "cf")
STATE_FORMAT = "verticore-recommender/1"
#: the registry app name the recommender's models live under (``verticore retrain --app recommender``)
REGISTRY_APP = "recommender"


@dataclass
class Recommendation:
    """One recommended item with its score and why it was recommended."""

    item: str
    score: float
    title: str
    because: list[str] = field(default_factory=list)
    because_titles: list[str] = field(default_factory=list)
    interest: int = 0
    source: str = "text"

    @property
    def explanation(self) -> str:
        """Human-readable reason: ``because you liked X and Y`` (or the query it matched)."""
        if self.because_titles:
            return "because you liked " + " and ".join(self.because_titles)
        if self.source == "query":
            return "matches your description"
        if self.source == "popular":
            return "popular right now"
        if self.source == "catalog":
            return "from the catalog"  # cold start before anyone interacted with it
        return "popular with similar users" if self.source == "cf" else "similar to your taste"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["explanation"] = self.explanation
        return d


@register_component("recommender.Recommender")
class Recommender(Component):
    """Recommendations from item texts (FAISS retrieval) and user behaviour.

    Implements :class:`verticore.evaluation.RankingModel` (:meth:`recommend_batch`), so
    ``verticore.evaluation.evaluate_ranking`` scores its text, hybrid and CF modes.

    Args:
        catalog: the embedded, indexed items.
        interactions: user histories (may be empty: cold-start users are served from text).
        cf: an optional fitted :class:`~recommender.cf.EASE` model for the hybrid score.
        mode: ``"text"``, ``"hybrid"`` (CF blended with text; text alone for cold items) or
            ``"cf"``; ``None`` picks hybrid when ``cf`` is given, else text.
        alpha: weight of the (z-scored) CF score in the hybrid blend (``recommender build`` tunes
            it with :func:`~recommender.training.tune_alpha`).
        alpha_tuning: how ``alpha`` was chosen (``AlphaTuning.to_dict()``: the holdout metric per
            grid value, or ``{"skipped": reason}``), kept with the saved state; ``None`` when set by hand.
        half_life_days: time decay of history weights (``None`` = no decay).
        n_interests: clusters per user profile (1 = one mean profile; >1 = multi-interest,
            recommendations interleaved across interests).
        candidate_factor: ANN candidates retrieved per requested recommendation before re-ranking.

    ``to_dict``/``from_dict`` round-trip the settings above (``mode`` .. ``alpha_tuning``); the
    catalog, interactions and CF model are state, passed to ``from_dict`` as keyword arguments
    (``Recommender.from_dict(d, catalog=c, cf=ease)``) and written in full by :meth:`save`.
    """

    def __init__(self, catalog: Catalog, interactions: Interactions | None = None, *, cf: EASE | None = None,
                 mode: str | None = None, alpha: float = 0.5, half_life_days: float | None = None,
                 n_interests: int = 1, candidate_factor: int = 10, explain_top: int = 2,
                 alpha_tuning: dict[str, Any] | None = None) -> None:
        self.catalog = catalog
        self.interactions = interactions if interactions is not None else Interactions.empty()
        self.cf = cf
        mode = mode or ("hybrid" if cf is not None else "text")
        if mode not in MODES:
            raise DataError(f"unknown mode {mode!r}; use one of {list(MODES)}")
        if mode in ("hybrid", "cf") and cf is None:
            raise DataError(f"mode {mode!r} needs a fitted CF model (fit EASE on the interactions first)")
        self.mode = mode
        self.alpha = float(alpha)
        self.alpha_tuning = alpha_tuning
        self.half_life_days = half_life_days
        self.n_interests = max(1, int(n_interests))
        self.candidate_factor = max(2, int(candidate_factor))
        self.explain_top = explain_top
        self._lock = threading.RLock()
        self._pop_cache: dict[str, float] | None = None

    def _init_parameters(self) -> dict[str, Any]:
        return {"mode": self.mode, "alpha": self.alpha, "half_life_days": self.half_life_days,
                "n_interests": self.n_interests, "candidate_factor": self.candidate_factor,
                "explain_top": self.explain_top, "alpha_tuning": self.alpha_tuning}

    @classmethod
    def from_dict(cls, data: dict[str, Any], **state: Any) -> "Recommender":
        """Rebuild from :meth:`to_dict` settings plus the state (``catalog=``, ``interactions=``, ``cf=``)."""
        if "catalog" not in state:
            raise DataError("Recommender.from_dict needs the catalog (catalog=...): settings alone hold no items")
        return super().from_dict(data, **state)

    def warm_up(self) -> None:
        """Load the catalog embedder's weights now rather than on the first text query (idempotent)."""
        warm_up = getattr(getattr(self.catalog, "embedder", None), "warm_up", None)
        if callable(warm_up):
            warm_up()

    # -- the model registry (issue #14): serve promoted versions without a restart ------------
    def follow_registry(self, registry: Any = None, *, interval: float = 2.0) -> dict[str, int]:
        """Serve the registry's ``production`` versions of ``recommender/cf`` (EASE) and
        ``recommender/embedder`` (the behaviour-tuned embedder; the catalog is re-embedded with it)
        from now on, and follow later promotions and rollbacks: :meth:`sync_models` (the API calls
        it before each request) swaps a model in when its alias moves. ``registry``: a
        ``ModelRegistry`` or its folder (default ``$VERTICORE_HOME/registry``). A model with no
        production version, or one that does not load, is not followed (logged). Returns
        ``{model: served version}``."""
        from verticore.errors import VerticoreError
        from verticore.registry.store import ModelRegistry

        reg = registry if isinstance(registry, ModelRegistry) else ModelRegistry(registry)
        handles: dict[str, Any] = {}
        for name, loader in (("cf", EASE.load), ("embedder", self._catalog_embedded_with)):
            try:
                if "production" not in reg.aliases(REGISTRY_APP, name):
                    continue
                handle = reg.watch(REGISTRY_APP, name, loader, interval=interval)
                handle.get()
            except VerticoreError as exc:
                log.warning("recommender %s: not following the registry (%s)", name, str(exc).splitlines()[0])
                continue
            handles[name] = handle
        self._registry_handles, self._served_versions = handles, {}
        self.sync_models()
        return dict(self._served_versions)

    def sync_models(self) -> bool:
        """Swap in any followed model whose alias moved (cheap: one ``stat`` per model at most every
        ``interval`` seconds). In-flight requests finish on the objects they hold. True if one changed."""
        changed = False
        for name, handle in getattr(self, "_registry_handles", {}).items():
            obj, version = handle.get(), handle.version.version
            if self._served_versions.get(name) == version:
                continue
            with self._lock:
                if name == "cf":
                    self.cf = obj  # a text-only state stays text-only: the mode is the operator's choice
                else:
                    self.catalog = obj
                self._pop_cache = None
            self._served_versions[name] = version
            log.info("recommender: serving %s v%d", name, version)
            changed = True
        return changed

    def _catalog_embedded_with(self, embedder_dir: Path) -> Catalog:
        """This catalog's items re-embedded with the embedder in ``embedder_dir``."""
        from verticore import Embedder

        cat = self.catalog
        return Catalog.from_records([cat.get(i) for i in cat.ids], embedder=Embedder(str(embedder_dir)),
                                    template=cat.template, id_field=cat.id_field)

    # -- users --------------------------------------------------------------------------
    def known_user(self, user: Any) -> bool:
        return self.interactions.has_user(user)

    def user_history(self, user: Any) -> list[dict[str, Any]]:
        """The user's interactions with catalog items, oldest first (:class:`DataError` if unknown)."""
        h = self.interactions.history(user)
        return [{"item": r.item, "title": self.catalog.title(r.item), "weight": float(r.weight),
                 "timestamp": float(r.timestamp)} for r in h.itertuples() if r.item in self.catalog]

    def interests(self, user: Any, n_interests: int | None = None) -> list[Interest]:
        """The user's profile: ``n_interests`` time-decayed weighted centroids of their items."""
        items, weights = self._history_arrays(user)
        vecs = self.catalog.vectors(items)
        return multi_interest(vecs, weights, k=n_interests or self.n_interests)

    def _history_arrays(self, user: Any) -> tuple[list[str], np.ndarray]:
        h = self.interactions.history(user)
        h = h[h["item"].map(lambda i: i in self.catalog)]
        if h.empty:
            raise DataError(f"user {str(user)!r} has no interactions with items still in the catalog")
        w = decay_weights(h["timestamp"].to_numpy(), h["weight"].to_numpy(), self.half_life_days)
        return h["item"].tolist(), w

    def record(self, user: Any, item: Any, weight: float = 1.0, timestamp: float | None = None) -> None:
        """Add an interaction (the item must be in the catalog)."""
        with self._lock:
            self.catalog.get(item)
            self.interactions.add(user, item, weight, timestamp)
            self._pop_cache = None

    def record_events(self, events: Sequence[dict[str, Any]], persist_to: str | Path | None = None,
                      now: float | None = None) -> int:
        """Record interaction events ``{user, item, event, weight?, timestamp?}``, all or none.

        ``event`` is one of :data:`~recommender.interactions.EVENT_WEIGHTS` (its weight applies
        unless ``weight`` is given). Every row is checked first (unknown item, bad event, bad
        number): any problem raises :class:`DataError` listing the bad rows and nothing is
        recorded. With ``persist_to`` (the state's ``interactions.csv``) the rows are appended and
        fsynced before they change the in-memory histories, so an acknowledged event survives a
        crash. Profiles are computed from the histories, so the next recommendation reflects them.
        """
        now = time.time() if now is None else float(now)
        rows: list[tuple[str, str, float, float]] = []
        problems: list[str] = []
        with self._lock:
            for n, ev in enumerate(events):
                try:
                    rows.append(self._event_row(ev, now))
                except DataError as exc:
                    problems.append(f"event {n}: {exc}")
            if problems:
                more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
                raise DataError("; ".join(problems[:5]) + more + "; nothing was recorded")
            if not rows:
                return 0
            if persist_to is not None:
                append_rows(persist_to, rows)
            self.interactions.add_many(rows)
            self._pop_cache = None
        return len(rows)

    def _event_row(self, ev: Any, now: float) -> tuple[str, str, float, float]:
        if not isinstance(ev, dict):
            raise DataError("must be an object with user, item and event")
        user, item = ev.get("user"), ev.get("item")
        if not isinstance(user, (str, int)) or not str(user).strip():
            raise DataError("user is missing or empty")
        if not isinstance(item, (str, int)) or not str(item).strip():
            raise DataError("item is missing or empty")
        item = str(item).strip()
        if item not in self.catalog:
            raise DataError(f"unknown item {item!r}")
        kind = ev.get("event")
        if kind not in EVENT_WEIGHTS:
            raise DataError(f"event must be one of {list(EVENT_WEIGHTS)} (got {kind!r})")
        weight = ev.get("weight")
        weight = EVENT_WEIGHTS[kind] if weight is None else weight
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight <= 0:
            raise DataError(f"weight must be a positive number (got {weight!r})")
        ts = ev.get("timestamp")
        ts = now if ts is None else ts
        if isinstance(ts, bool) or not isinstance(ts, (int, float)) or not math.isfinite(ts) or ts < 0:
            raise DataError(f"timestamp must be seconds since the epoch (got {ts!r})")
        return str(user).strip(), item, float(weight), float(ts)

    # -- items --------------------------------------------------------------------------
    def upsert_items(self, records: Iterable[dict[str, Any]] | Any, show_progress: bool = False):
        """Add/update catalog items; new items are recommendable immediately (text only)."""
        with self._lock:
            return self.catalog.upsert(records, show_progress=show_progress)

    def remove_items(self, item_ids: Iterable[Any]) -> int:
        """Remove items from the catalog and index (history rows stay but are ignored)."""
        with self._lock:
            return self.catalog.remove(item_ids)

    # -- recommendation -----------------------------------------------------------------
    def recommend(self, user: Any, k: int = 10, *, exclude_seen: bool = True, filters: Filters = None,
                  diversity: float = 0.0, prior: float = 0.0, candidates: Iterable[Any] | None = None,
                  n_interests: int | None = None, mode: str | None = None, explain: bool = True) -> list[Recommendation]:
        """Top-``k`` items for a known user.

        ANN retrieval per interest (plus CF candidates in hybrid mode), then re-ranking: the
        hybrid blend, an optional popularity/recency ``prior`` (weight in [0, 1]) and MMR with
        ``diversity`` in [0, 1]. ``filters`` restricts items by metadata (dict or predicate);
        ``candidates`` restricts to an explicit id set. Raises :class:`DataError` for an unknown user.
        """
        with self._lock:
            items, weights = self._history_arrays(user)
            return self._recommend_from(items, weights, k=k, exclude=set(self.interactions.seen(user)) if exclude_seen else set(),
                                        filters=filters, diversity=diversity, prior=prior, candidates=candidates,
                                        n_interests=n_interests, mode=mode, explain=explain)

    def recommend_batch(self, users: Sequence[Any], k: int = 10) -> dict[Any, list[str]]:
        """Item ids of :meth:`recommend` for each user (an empty list for a user without history)."""
        return {u: [r.item for r in self.recommend(u, k, explain=False)] if self.has_profile(u) else [] for u in users}

    def search_items(self, query: str, k: int = 10, *, mode: str = "hybrid") -> list[Recommendation]:
        """Search item texts with the core retrievers: BM25 (exact words: titles, names), dense
        (meaning) or both fused (``mode``); built from the catalog on first use."""
        from verticore.retrieval import BM25Retriever, DenseRetriever, HybridRetriever

        with self._lock:
            if len(self.catalog) == 0:
                raise DataError("the catalog is empty: add items before searching")
            texts = self.catalog.texts
            if getattr(self, "_text_search_texts", None) != texts:  # the catalog changed: rebuild the BM25 side
                bm25 = BM25Retriever()
                bm25.set_texts(list(texts), list(texts.values()))
                dense = DenseRetriever(self.catalog.embedder, index=self.catalog.index)
                self._text_search = HybridRetriever(dense, bm25, dense_weight=0.5)
                self._text_search_texts = dict(texts)
            hits = self._text_search.search(query, k=k, mode=mode)
            return [Recommendation(item=h.key, score=h.score, title=self.catalog.title(h.key), source="query")
                    for h in hits]

    def has_profile(self, user: Any) -> bool:
        """True when ``user`` has history with items still in the catalog (else they are cold)."""
        return any(i in self.catalog for i in self.interactions.seen(user))

    def recommend_or_cold_start(self, user: Any, k: int = 10, *, text: str | None = None,
                                items: Sequence[Any] | None = None, exclude_seen: bool = True, filters: Filters = None,
                                diversity: float = 0.0, prior: float = 0.0, explain: bool = True,
                                ) -> tuple[list[Recommendation], str]:
        """Recommendations for any user: from their history when they have one, else a cold start.

        A cold start uses the hints in order: ``items`` (seed items the user picked), ``text``
        (a description of their taste), else the most popular items. Returns the list and the
        strategy used (``"history"``, ``"items"``, ``"text"`` or ``"popular"``). Explanations only
        name the user's own history or the seed items passed in: never other users' data.
        """
        with self._lock:
            if self.has_profile(user):
                return self.recommend(user, k, exclude_seen=exclude_seen, filters=filters, diversity=diversity,
                                      prior=prior, explain=explain), "history"
            seen = self.interactions.seen(user) if exclude_seen else set()
            if items:
                recs = self.recommend_for_items(items, k + len(seen), filters=filters, diversity=diversity,
                                                prior=prior, explain=explain)
                return [r for r in recs if r.item not in seen][:k], "items"
            if text is not None and text.strip():
                return self.recommend_for_text(text, k, filters=filters, diversity=diversity, prior=prior,
                                               exclude=seen), "text"
            return self.popular(k, filters=filters, exclude=seen), "popular"

    def popular(self, k: int = 10, *, filters: Filters = None, exclude: Iterable[Any] = ()) -> list[Recommendation]:
        """The most interacted-with items (time-decayed when the recommender decays history).

        With no interactions at all, the catalog's first items in catalog order (still a list,
        never an error, so a brand-new deployment can serve its first visitor).
        """
        if k <= 0:
            raise DataError("k must be at least 1")
        with self._lock:
            if len(self.catalog) == 0:
                raise DataError("the catalog is empty: add items before asking for recommendations")
            excl = {str(e) for e in exclude}
            allow = self.catalog.allowed(filters, None, excl)
            pool = [i for i in (allow if allow is not None else self.catalog.ids) if i not in excl]
            counts = self._popularity()
            total = max(sum(counts.values()), 1e-12)
            order = sorted(range(len(pool)), key=lambda j: (-counts.get(pool[j], 0.0), j))[:k]
            return [Recommendation(item=pool[j], score=float(counts.get(pool[j], 0.0) / total),
                                   title=self.catalog.title(pool[j]),
                                   source="popular" if counts.get(pool[j], 0.0) > 0 else "catalog") for j in order]

    def recommend_for_items(self, items: Sequence[Any], k: int = 10, **kwargs: Any) -> list[Recommendation]:
        """Cold-start user from a few picked items (which are excluded from the result)."""
        keys = [str(i) for i in items]
        if not keys:
            raise DataError("pick at least one item")
        for key in keys:
            self.catalog.get(key)
        with self._lock:
            return self._recommend_from(keys, np.ones(len(keys)), k=k, exclude=set(keys), **kwargs)

    def recommend_for_text(self, text: str, k: int = 10, *, filters: Filters = None, diversity: float = 0.0,
                           prior: float = 0.0, candidates: Iterable[Any] | None = None,
                           exclude: Iterable[Any] = ()) -> list[Recommendation]:
        """Cold-start user from a free-text description of their taste."""
        with self._lock:
            q = self.catalog.embed_query(text)
            return self._rank_single(q, [], np.zeros(0), k, set(map(str, exclude)), filters, diversity, prior,
                                     candidates, mode="text", explain=False, source="query", interest=0)

    def similar_items(self, item: Any, k: int = 10, *, filters: Filters = None, diversity: float = 0.0) -> list[Recommendation]:
        """Items whose text is nearest to ``item`` (the item itself excluded)."""
        with self._lock:
            key = str(item)
            v = self.catalog.vectors([key])[0]
            recs = self._rank_single(v, [], np.zeros(0), k, {key}, filters, diversity, 0.0, None, mode="text",
                                     explain=False, source="similar", interest=0)
            return recs

    def search(self, text: str, k: int = 10, *, filters: Filters = None) -> list[Recommendation]:
        """Semantic search over item texts."""
        with self._lock:
            q = self.catalog.embed_query(text)
            return self._rank_single(q, [], np.zeros(0), k, set(), filters, 0.0, 0.0, None, mode="text",
                                     explain=False, source="query", interest=0)

    # -- internals ----------------------------------------------------------------------
    def _recommend_from(self, items: list[str], weights: np.ndarray, *, k: int, exclude: set[str],
                        filters: Filters = None, diversity: float = 0.0, prior: float = 0.0,
                        candidates: Iterable[Any] | None = None, n_interests: int | None = None,
                        mode: str | None = None, explain: bool = True) -> list[Recommendation]:
        mode = mode or self.mode
        if mode not in MODES:
            raise DataError(f"unknown mode {mode!r}; use one of {list(MODES)}")
        if mode in ("hybrid", "cf") and self.cf is None:
            raise DataError(f"mode {mode!r} needs a fitted CF model")
        if k <= 0:
            raise DataError("k must be at least 1")
        if candidates is not None:
            candidates = [str(c) for c in candidates]
        vecs = self.catalog.vectors(items)
        n_int = n_interests or self.n_interests
        if n_int <= 1 or len(items) < 2:
            profile = weighted_mean(vecs, weights)
            return self._rank_single(profile, items, vecs, k, exclude, filters, diversity, prior, candidates,
                                     mode=mode, explain=explain, cf_history=items, source=mode, interest=0)
        interests = multi_interest(vecs, weights, k=n_int)
        lists: list[list[Recommendation]] = []
        for j, it in enumerate(interests):
            lists.append(self._rank_single(it.centroid, items, vecs, k, exclude, filters, 0.0, prior, candidates,
                                           mode=mode, explain=False, cf_history=items, source=mode, interest=j))
        by_id: dict[str, Recommendation] = {}
        for lst in lists:
            for r in lst:
                if r.item not in by_id or r.score > by_id[r.item].score:
                    by_id[r.item] = r
        order = interleave([[r.item for r in lst] for lst in lists], [it.weight for it in interests],
                           k=k * (3 if diversity > 0 else 1))
        recs = [by_id[i] for i in order]
        if diversity > 0 and len(recs) > k:
            pos_rel = np.linspace(1.0, 0.0, len(recs))  # interleaved rank is the relevance
            sel = mmr(pos_rel, self.catalog.vectors([r.item for r in recs]), k, diversity)
            recs = [recs[i] for i in sel]
        recs = recs[:k]
        if explain:
            self._explain(recs, items, vecs)
        return recs

    def _rank_single(self, profile: np.ndarray, history: list[str], hist_vecs: np.ndarray, k: int, exclude: set[str],
                     filters: Filters, diversity: float, prior: float, candidates: list[str] | None, *, mode: str,
                     explain: bool, source: str, interest: int, cf_history: list[str] | None = None) -> list[Recommendation]:
        if len(self.catalog) == 0:
            raise DataError("the catalog is empty: add items before asking for recommendations")
        allow = self.catalog.allowed(filters, candidates, exclude)
        n_cand = max(k * self.candidate_factor, 50)
        pool: dict[str, float] = {}
        if mode != "cf":
            want = n_cand if allow is not None else n_cand + len(exclude)
            for key, score in self.catalog.search_vectors(profile[None, :], want, allow)[0]:
                if key not in exclude:
                    pool[key] = score
        cf_scores: dict[str, float] = {}
        if mode in ("hybrid", "cf") and cf_history:
            s = self.cf.scores(cf_history)
            allowed = set(allow) if allow is not None else None
            order = np.argsort(-s, kind="stable")
            taken = 0
            for j in order:
                it = self.cf.items[j]
                if it in exclude or it not in self.catalog or (allowed is not None and it not in allowed):
                    continue
                cf_scores[it] = float(s[j])
                taken += 1
                if taken >= n_cand:
                    break
            missing = [i for i in cf_scores if i not in pool]
            if missing and mode == "hybrid":
                sims = self.catalog.vectors(missing) @ profile
                pool.update({i: float(v) for i, v in zip(missing, sims)})
            for i in pool:  # CF score for text candidates too (NaN when cold)
                if i not in cf_scores and self.cf.knows(i):
                    cf_scores[i] = float(s[self.cf.index[i]])
        if mode == "cf":
            pool = dict(cf_scores)
        ids = list(pool)
        if not ids:
            return []
        text_s = np.array([pool[i] for i in ids], dtype=np.float64)
        if mode == "hybrid":
            score = self._blend(ids, text_s, cf_scores)
        else:
            score = text_s
        sel, score = Reranker(diversity=diversity, prior=prior).rerank(
            score, k, vectors=lambda: self.catalog.vectors(ids),
            popularity=lambda: popularity_prior(ids, self._popularity()))
        recs = [Recommendation(item=ids[i], score=float(score[i]), title=self.catalog.title(ids[i]), interest=interest,
                               source=("cf" if mode == "cf" else ("text" if mode == "hybrid" and not self.cf.knows(ids[i]) else source)))
                for i in sel]
        if explain and history:
            self._explain(recs, history, hist_vecs)
        return recs

    def _blend(self, ids: list[str], text_s: np.ndarray, cf_scores: dict[str, float]) -> np.ndarray:
        cf = np.array([cf_scores.get(i, np.nan) for i in ids], dtype=np.float64)
        warm = ~np.isnan(cf)
        zt = _z(text_s)
        out = zt.copy()  # cold items: text alone
        if warm.any():
            zc = np.zeros_like(cf)
            zc[warm] = _z(cf[warm])
            out[warm] = self.alpha * zc[warm] + (1 - self.alpha) * zt[warm]
        return out

    def _popularity(self) -> dict[str, float]:
        if self._pop_cache is None:
            self._pop_cache = self.interactions.counts(half_life_days=self.half_life_days)
        return self._pop_cache

    def _explain(self, recs: list[Recommendation], history: list[str], hist_vecs: np.ndarray) -> None:
        if not recs or not history:
            return
        rv = self.catalog.vectors([r.item for r in recs])
        sims = rv @ np.asarray(hist_vecs, dtype=np.float32).T
        for r, row in zip(recs, sims):
            top = np.argsort(-row, kind="stable")
            best = float(row[top[0]])
            picked: list[str] = []
            for j in top:  # the nearest history item, plus others nearly as near
                if picked and float(row[j]) < max(0.3, best - 0.1):
                    break
                if history[j] not in picked:
                    picked.append(history[j])
                if len(picked) >= self.explain_top:
                    break
            r.because = picked
            r.because_titles = [self.catalog.title(i) for i in picked]

    # -- persistence --------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """Persist catalog (+ FAISS index), interactions (CSV), CF model (safetensors) and settings."""
        d = Path(directory)
        with self._lock:
            self.catalog.save(d / "catalog")
            self.interactions.save(d / "interactions.csv")
            if self.cf is not None:
                self.cf.save(d / "cf")
            atomic_write_json(d / "recommender.json", {"format": STATE_FORMAT, **self.to_dict()})
        return d

    @classmethod
    def load(cls, directory: str | Path, embedder: Any = None) -> "Recommender":
        """Load what :meth:`save` wrote (raises :class:`ArtifactError` / ``IndexMismatchError``)."""
        d = Path(directory)
        if not (d / "recommender.json").exists():
            raise ArtifactError(f"no recommender state in {d} (recommender.json missing); run `recommender build` first")
        try:
            cfg = read_json(d / "recommender.json", "recommender config")
        except DataError as exc:
            raise ArtifactError(str(exc)) from None
        catalog = Catalog.load(d / "catalog", embedder=embedder)
        if (d / "interactions.csv").exists():
            repair_tail(d / "interactions.csv")  # a crash mid-append (record_events) leaves a torn last line
        inter = Interactions.from_file(d / "interactions.csv", allow_empty=True) \
            if (d / "interactions.csv").exists() else Interactions.empty()
        cf = EASE.load(d / "cf") if (d / "cf" / "ease.json").exists() else None
        # settings as a component dict; older states kept them at the top level
        settings = dict(cfg["init_parameters"]) if isinstance(cfg.get("init_parameters"), dict) else \
            {k: cfg[k] for k in ("mode", "alpha", "half_life_days", "n_interests", "candidate_factor",
                                 "alpha_tuning") if k in cfg}
        settings.setdefault("mode", "text")
        if settings["mode"] != "text" and cf is None:
            settings["mode"] = "text"
        return cls.from_dict({"type": cls.component_name, "init_parameters": settings},
                             catalog=catalog, interactions=inter, cf=cf)
