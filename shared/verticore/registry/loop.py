"""The retrain loop (issue #14): feedback labels -> candidate -> gate on a fixed split -> promote or not.

An app declares its retrainable models on its :class:`~verticore.plugins.AppSpec`::

    APP = AppSpec(..., models={"intent": "my_app.retrain:IntentRetrainer"})

where the hook names an object (or a zero-argument class/factory returning one) implementing
:class:`RetrainableModel`. ``verticore retrain --app my_app --model intent`` (or :func:`retrain`)
then:

1. reads the ``production`` version of ``my_app/intent`` in the :class:`ModelRegistry`;
2. collects the labels given since that version was trained (``collect_labels``); none: one
   line saying so, nothing is trained;
3. trains a candidate with the production version's recipe on the old data (``base_data``
   plus every earlier label) and the new labels, resolved by the label rules below;
4. scores it on the model's fixed evaluation split (``fixed_eval_split``), registers it as a
   new version (parent, data fingerprint, recipe, metrics) and points ``candidate`` at it;
5. gates it against production on that split (:meth:`ModelRegistry.gate`: primary metric
   within ``tolerance``, per-class floors, McNemar and a paired bootstrap CI stored on the
   version as ``gate.json``), and promotes it only when the gate passes. A failed gate leaves
   production untouched and says why.

When the model has no production version yet, the app's current model (``current_artifact``,
optional) or a model trained on ``base_data`` alone becomes production v1 first, so the first
retrain is gated like every later one.

Label rules
-----------
Every label keeps its ``source`` (e.g. ``agent_resolution``, ``analyst``, ``base``), its
``time`` (ISO 8601 UTC; base data has none) and whether a person gave it (``human``).
Labels are grouped by text (whitespace collapsed, case folded):

* duplicates (same text, same label) collapse into one;
* conflicting labels for one text: the latest by time wins; at equal times a person's label
  (``human=True``, e.g. an agent) beats an automatic one; then the later one given wins.
  Base data (no time) loses to any feedback label, so a correction overrides the training set.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Protocol, Sequence, runtime_checkable

from ..errors import DataError
from ..io import fingerprint_texts
from ..text import utc_iso

#: recipe key under which the loop records what a version was trained on (dropped when the recipe is reused)
TRAINING_DATA_KEY = "training_data"
DEFAULT_TOLERANCE = 0.01
_EPOCH = datetime.min.replace(tzinfo=timezone.utc)


def parse_time(value: Any) -> datetime | None:
    """A label time as an aware UTC datetime: ISO 8601 text (naive = UTC), epoch seconds, a datetime or None."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, (int, float)):
        return datetime.fromtimestamp(float(value), tz=timezone.utc)
    else:
        try:
            moment = datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
        except ValueError:
            raise DataError(f"label time {value!r} is not an ISO 8601 time") from None
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


@dataclass(frozen=True)
class Label:
    """One labelled text with where it came from: ``source`` (``agent_correction``, ``analyst``, ``base``, ...),
    ``time`` (ISO 8601 UTC; None for base data), ``human`` (a person gave it) and ``by`` (who)."""

    text: str
    label: str
    source: str
    time: str | None = None
    human: bool = True
    by: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "label": self.label, "source": self.source, "time": self.time,
                "human": self.human, "by": self.by}


def text_key(text: str) -> str:
    """The identity of a text for the label rules: whitespace collapsed, case folded."""
    return " ".join(str(text).split()).casefold()


@dataclass
class LabelSet:
    """An ordered collection of :class:`Label` (``texts``/``labels`` are parallel lists)."""

    items: list[Label] = field(default_factory=list)

    @classmethod
    def from_pairs(cls, texts: Iterable[str], labels: Iterable[Any], *, source: str = "base",
                   time: str | None = None, human: bool = True) -> "LabelSet":
        """Labels from parallel texts/labels sharing one source and time (e.g. a bundled training table)."""
        return cls([Label(str(t), str(y), source, time, human) for t, y in zip(texts, labels)])

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[Label]:
        return iter(self.items)

    def __add__(self, other: "LabelSet") -> "LabelSet":
        return LabelSet([*self.items, *other.items])

    @property
    def texts(self) -> list[str]:
        return [x.text for x in self.items]

    @property
    def labels(self) -> list[str]:
        return [x.label for x in self.items]

    def sources(self) -> dict[str, int]:
        """How many labels each source gave."""
        out: dict[str, int] = {}
        for x in self.items:
            out[x.source] = out.get(x.source, 0) + 1
        return dict(sorted(out.items()))

    def since(self, moment: datetime | None) -> "LabelSet":
        """The labels given strictly after ``moment`` (all timed labels when None; untimed ones never)."""
        return LabelSet([x for x in self.items if (t := parse_time(x.time)) is not None
                         and (moment is None or t > moment)])

    def latest_time(self) -> str | None:
        times = [t for x in self.items if (t := parse_time(x.time)) is not None]
        return utc_iso(max(times), timespec="microseconds") if times else None

    def resolved(self) -> "LabelSet":
        """One label per text by the module's rules (latest wins; at a tie a person beats automation;
        then the later one given), in the order each text first appeared."""
        best: dict[str, tuple[tuple[datetime, bool, int], Label]] = {}
        order: list[str] = []
        for i, x in enumerate(self.items):
            if not str(x.text).strip():
                continue
            k = text_key(x.text)
            rank = (parse_time(x.time) or _EPOCH, bool(x.human), i)
            if k not in best:
                order.append(k)
            if k not in best or rank > best[k][0]:
                best[k] = (rank, x)
        return LabelSet([best[k][1] for k in order])

    def fingerprint(self) -> str:
        """SHA-256 of the (text, label) pairs, independent of their order."""
        pairs = sorted(zip(self.texts, self.labels))
        return fingerprint_texts([t for t, _ in pairs], [y for _, y in pairs])


@runtime_checkable
class RetrainableModel(Protocol):
    """What an app implements for each model the loop retrains (named on ``AppSpec.models``).

    Optional extras the loop uses when present: ``default_recipe`` (a dict: the recipe of the first
    version) and ``current_artifact(home) -> Path | None`` (the model the app serves today, registered
    as production v1 when the registry has none).
    """

    #: "accuracy" or "macro_f1": what the gate compares
    primary_metric: str
    #: minimum per-class recall of a candidate: one number, {label: floor, "*": default} or None
    per_class_floors: float | Mapping[str, float] | None

    def collect_labels(self, home: Path, since: datetime | None) -> LabelSet:
        """Feedback labels given after ``since`` (every one when None), each with source and time."""

    def base_data(self, home: Path) -> LabelSet:
        """The data the first production version was trained on (e.g. the bundled sample data)."""

    def fixed_eval_split(self, home: Path) -> tuple[list[str], list[str]]:
        """(texts, labels) every version is scored and gated on; never trained on by the loop."""

    def train(self, recipe: Mapping[str, Any], texts: Sequence[str], labels: Sequence[str], out_dir: Path) -> Path:
        """Train with ``recipe`` on the texts/labels, write the artifact under ``out_dir`` and return its folder."""

    def predict(self, artifact_dir: Path, texts: Sequence[str]) -> list[str]:
        """The label the artifact gives each text."""


@runtime_checkable
class RetrainableRanker(Protocol):
    """What an app implements for a model that ranks items for users (a collaborative-filtering model or a
    behaviour-tuned embedder), where feedback is interaction events rather than labelled texts.

    The loop is the same as for a :class:`RetrainableModel` (new data since production, candidate from
    the production recipe, fixed split, gate, promote or not); what differs is what "data" and
    "score" mean:

    * ``collect_events`` returns one :class:`Label` per interaction (``text`` = user id, ``label`` =
      item id, ``time`` = when it happened, ``source`` e.g. ``event``): only counted and timed;
    * ``train`` reads the app's interactions itself (every one but the fixed split's);
    * ``score_users`` gives each evaluation user's ``primary_metric`` (e.g. NDCG@10), the per-example
      outcomes the gate bootstraps (:func:`~verticore.registry.gate.compare_scores`).
    """

    #: e.g. "ndcg@10": the per-user score the gate compares (higher is better)
    primary_metric: str

    def collect_events(self, home: Path, since: datetime | None) -> LabelSet:
        """Interactions recorded after ``since`` (every one when None): text = user, label = item."""

    def fixed_eval_split(self, home: Path) -> dict[str, set[str]]:
        """``{user: held-out items}`` every version is scored on; never trained on."""

    def training_data(self, home: Path) -> dict[str, Any]:
        """``{"examples": int, "fingerprint": str, "labels_until": ISO time | None}`` of what ``train``
        would read now."""

    def train(self, recipe: Mapping[str, Any], home: Path, out_dir: Path) -> Path:
        """Train with ``recipe`` on the app's interactions (fixed split left out); return the artifact folder."""

    def score_users(self, artifact_dir: Path, home: Path, users: Sequence[str]) -> list[float]:
        """The primary metric of each user in ``users`` (in that order) for the artifact."""


@dataclass
class RetrainResult:
    """What one :func:`retrain` call did. ``status``: ``promoted``, ``rejected``, ``nothing_to_train``
    or ``dry_run``; ``message`` says it in one line."""

    app: str
    model: str
    status: str
    message: str
    new_labels: int = 0
    new_label_sources: dict[str, int] = field(default_factory=dict)
    train_examples: int = 0
    production_before: int | None = None
    production_after: int | None = None
    candidate: int | None = None
    since: str | None = None
    recipe: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    gate: dict[str, Any] | None = None
    bootstrapped: int | None = None  # the production v1 registered first, when there was none

    @property
    def promoted(self) -> bool:
        return self.status == "promoted"

    def to_dict(self) -> dict[str, Any]:
        return {"app": self.app, "model": self.model, "status": self.status, "promoted": self.promoted,
                "message": self.message, "new_labels": self.new_labels, "new_label_sources": self.new_label_sources,
                "train_examples": self.train_examples, "production_before": self.production_before,
                "production_after": self.production_after, "candidate": self.candidate, "since": self.since,
                "recipe": self.recipe, "metrics": self.metrics, "gate": self.gate, "bootstrapped": self.bootstrapped}


def load_retrainable(app: Any, model: str) -> tuple[str, RetrainableModel]:
    """(app name, the model object) for ``app`` (an AppSpec or an installed app's name) and ``model``."""
    from ..plugins import AppSpec, discover_apps, resolve_hook

    if isinstance(app, AppSpec):
        spec = app
    else:
        apps = discover_apps()
        if str(app) not in apps:
            raise DataError(f"unknown app {app!r}; installed: {', '.join(apps) or 'none'}")
        spec = apps[str(app)]
    models = dict(getattr(spec, "models", None) or {})
    if model not in models:
        raise DataError(f"app {spec.name} has no retrainable model {model!r}; "
                        f"it declares: {', '.join(sorted(models)) or 'none'}")
    obj = resolve_hook(models[model], f"app {spec.name}: model {model}")
    if isinstance(obj, type) or (callable(obj) and not isinstance(obj, (RetrainableModel, RetrainableRanker))):
        obj = obj()
    if not isinstance(obj, (RetrainableModel, RetrainableRanker)):
        raise DataError(f"app {spec.name}: model {model} is a {type(obj).__name__}, neither a RetrainableModel "
                        "(collect_labels, base_data, fixed_eval_split, train, predict, primary_metric, "
                        "per_class_floors) nor a RetrainableRanker (collect_events, fixed_eval_split, "
                        "training_data, train, score_users, primary_metric)")
    return spec.name, obj


def _eval_split_name(texts: Sequence[str], labels: Sequence[str]) -> str:
    return "fixed:" + fingerprint_texts(texts, labels)


def _metrics(y_true: Sequence[str], y_pred: Sequence[str]) -> dict[str, Any]:
    from ..evaluation import classification_metrics

    m = classification_metrics(list(y_true), list(y_pred))
    return {k: m[k] for k in ("accuracy", "macro_f1", "weighted_f1", "n")}


def _predict(rm: RetrainableModel, artifact: Path, texts: Sequence[str]) -> list[str]:
    pred = [str(p) for p in rm.predict(Path(artifact), list(texts))]
    if len(pred) != len(texts):
        raise DataError(f"predict returned {len(pred)} labels for {len(texts)} texts")
    return pred


def _labels_until(version: Any) -> datetime | None:
    """The time of the newest label a version was trained on (its creation time if the loop did not make it)."""
    data = (version.recipe or {}).get(TRAINING_DATA_KEY)
    if isinstance(data, Mapping) and "labels_until" in data:
        return parse_time(data["labels_until"])
    return parse_time(version.created_at)


def _recipe_of(version: Any, rm: RetrainableModel) -> dict[str, Any]:
    if version is None:
        return dict(getattr(rm, "default_recipe", None) or {})
    return {k: v for k, v in (version.recipe or {}).items() if k != TRAINING_DATA_KEY}


def retrain(app: Any, model: str, *, home: str | Path | None = None, registry: Any = None, dry_run: bool = False,
            tolerance: float = DEFAULT_TOLERANCE, by: str | None = None, seed: int = 0) -> RetrainResult:
    """Retrain ``app``'s ``model`` on the labels given since its production version; promote only
    through the gate. ``registry``: a :class:`ModelRegistry` or its folder (default
    ``$VERTICORE_HOME/registry``); ``home``: the Verticore home the app reads its feedback from.
    Raises :class:`DataError` for an unknown app/model or unusable data."""
    from ..paths import home as default_home
    from .store import ModelRegistry

    if not isinstance(tolerance, (int, float)) or tolerance < 0:
        raise DataError(f"tolerance must be a number >= 0, got {tolerance!r}")
    app_name, rm = load_retrainable(app, model)
    home_dir = Path(home) if home is not None else default_home()
    reg = registry if isinstance(registry, ModelRegistry) else ModelRegistry(registry)
    if not isinstance(rm, RetrainableModel):
        return _retrain_ranker(app_name, model, rm, home_dir, reg, dry_run=dry_run, tolerance=float(tolerance),
                               by=by, seed=seed)
    prod_n = reg.aliases(app_name, model).get("production")
    prod = reg.get(app_name, model, prod_n) if prod_n is not None else None
    cut = _labels_until(prod) if prod is not None else None
    every_label = rm.collect_labels(home_dir, None)
    new = every_label.since(cut)
    result = RetrainResult(app_name, model, "nothing_to_train", "", new_labels=len(new),
                           new_label_sources=new.sources(), production_before=prod_n, production_after=prod_n,
                           since=utc_iso(cut) if cut else None)
    where = f"production v{prod_n}" if prod is not None else "the start (no production version yet)"
    if not len(new):
        result.message = (f"no new labels for {app_name}/{model} since {where}"
                          + (f" (labels until {utc_iso(cut)})" if cut else "") + ": nothing to train")
        return result
    base = rm.base_data(home_dir)
    # old + new: the base data and every label up to now (earlier labels are the production's own data)
    training = (base + every_label.since(None)).resolved()
    recipe = _recipe_of(prod, rm)
    result.train_examples, result.recipe = len(training), recipe
    if dry_run:
        first = "" if prod is not None else f"; first a baseline on {len(base)} base examples becomes production"
        result.status = "dry_run"
        result.message = (f"would train {app_name}/{model} on {len(training)} examples ({len(new)} new labels since "
                          f"{where}: {_sources_text(new)}) with recipe {recipe or '{}'}{first}; nothing trained")
        return result
    eval_texts, eval_labels = rm.fixed_eval_split(home_dir)
    eval_texts, eval_labels = [str(t) for t in eval_texts], [str(y) for y in eval_labels]
    if not eval_texts or len(eval_texts) != len(eval_labels):
        raise DataError(f"{app_name}/{model}: the fixed evaluation split is empty or its texts and labels differ "
                        "in length")
    split = _eval_split_name(eval_texts, eval_labels)
    with tempfile.TemporaryDirectory(prefix="verticore-retrain-") as work:
        if prod is None:
            prod = _bootstrap(reg, app_name, model, rm, home_dir, base, recipe, eval_texts, eval_labels, split,
                              Path(work) / "baseline", by)
            result.bootstrapped = result.production_before = result.production_after = prod.version
        artifact = Path(rm.train(dict(recipe), training.texts, training.labels, Path(work) / "candidate"))
        cand_pred = _predict(rm, artifact, eval_texts)
        metrics = _metrics(eval_labels, cand_pred)
        data = {"labels_until": every_label.latest_time(), "examples": len(training),
                "feedback_labels": len(every_label), "new_labels": len(new), "sources": training.sources()}
        version = reg.register(app_name, model, artifact, data_fingerprint=training.fingerprint(),
                               recipe={**recipe, TRAINING_DATA_KEY: data}, metrics=metrics, eval_split=split,
                               parent=prod.version, created_by=by)
    result.candidate, result.metrics = version.version, metrics
    reg.promote(app_name, model, version, "candidate", by=by, reason="retrain candidate")
    prod_pred = _predict(rm, prod.artifact_path, eval_texts)
    gate = reg.gate(app_name, model, version, y_true=eval_labels, candidate_pred=cand_pred, production_pred=prod_pred,
                    primary=rm.primary_metric, tolerance=float(tolerance), floors=rm.per_class_floors, seed=seed)
    return _decide(reg, result, version, prod, gate, f"{len(new)} new labels", by)


def _decide(reg: Any, result: RetrainResult, version: Any, prod: Any, gate: Any, what: str,
            by: str | None) -> RetrainResult:
    """Promote ``version`` if its gate passed, else leave production; fill in ``result``."""
    result.gate = gate.to_dict()
    app_name, model = result.app, result.model
    if gate.passed:
        # require_gate: if another retrain moved production meanwhile, this gate is stale and promote refuses
        reg.promote(app_name, model, version, by=by, reason=f"retrain on {what}: {gate.reason}", require_gate=True)
        result.status, result.production_after = "promoted", version.version
        result.message = f"{app_name}/{model} v{version.version} promoted to production: {gate.reason}"
    else:
        result.status = "rejected"
        result.message = (f"{app_name}/{model} v{version.version} not promoted, production stays "
                          f"v{prod.version}: {gate.reason}")
    return result


def _retrain_ranker(app_name: str, model: str, rm: RetrainableRanker, home_dir: Path, reg: Any, *, dry_run: bool,
                    tolerance: float, by: str | None, seed: int) -> RetrainResult:
    """:func:`retrain` for a :class:`RetrainableRanker`: events instead of labels, per-user scores instead
    of predictions, the same registry bookkeeping and gate rule."""
    from .gate import compare_scores

    prod_n = reg.aliases(app_name, model).get("production")
    prod = reg.get(app_name, model, prod_n) if prod_n is not None else None
    cut = _labels_until(prod) if prod is not None else None
    new = rm.collect_events(home_dir, cut)
    result = RetrainResult(app_name, model, "nothing_to_train", "", new_labels=len(new),
                           new_label_sources=new.sources(), production_before=prod_n, production_after=prod_n,
                           since=utc_iso(cut) if cut else None)
    where = f"production v{prod_n}" if prod is not None else "the start (no production version yet)"
    data = dict(rm.training_data(home_dir))
    result.train_examples, result.recipe = int(data.get("examples", 0)), _recipe_of(prod, rm)
    if prod is not None and not len(new):
        result.message = (f"no new events for {app_name}/{model} since {where}"
                          + (f" (events until {utc_iso(cut)})" if cut else "") + ": nothing to train")
        return result
    if dry_run:
        result.status = "dry_run"
        first = "" if prod is not None else "; it becomes the first production version (no gate)"
        result.message = (f"would train {app_name}/{model} on {result.train_examples} interactions ({len(new)} new "
                          f"events since {where}) with recipe {result.recipe or '{}'}{first}; nothing trained")
        return result
    held = rm.fixed_eval_split(home_dir)
    users = sorted(u for u, items in held.items() if items)
    if not users:
        raise DataError(f"{app_name}/{model}: the fixed evaluation split has no user with a held-out item")
    split = "fixed:" + fingerprint_texts(users, ["|".join(sorted(held[u])) for u in users])

    def scores(artifact: Path) -> list[float]:
        out = [float(x) for x in rm.score_users(Path(artifact), home_dir, users)]
        if len(out) != len(users):
            raise DataError(f"score_users returned {len(out)} scores for {len(users)} users")
        return out

    recipe = result.recipe
    with tempfile.TemporaryDirectory(prefix="verticore-retrain-") as work:
        artifact = Path(rm.train(dict(recipe), home_dir, Path(work) / "candidate"))
        cand_scores = scores(artifact)
        metrics = {rm.primary_metric: sum(cand_scores) / len(cand_scores), "users": len(users)}
        info = {"labels_until": data.get("labels_until"), "examples": result.train_examples,
                "new_labels": len(new), "sources": new.sources()}
        version = reg.register(app_name, model, artifact, data_fingerprint=str(data.get("fingerprint", "")),
                               recipe={**recipe, TRAINING_DATA_KEY: info}, metrics=metrics, eval_split=split,
                               parent=prod.version if prod is not None else None, created_by=by)
    result.candidate, result.metrics = version.version, metrics
    if prod is None:  # nothing to gate against: the first version is production
        reg.promote(app_name, model, version, by=by, reason="first production version (retrain)")
        result.status, result.production_after = "promoted", version.version
        result.message = f"{app_name}/{model} v{version.version} is the first production version"
        return result
    reg.promote(app_name, model, version, "candidate", by=by, reason="retrain candidate")
    gate = compare_scores(cand_scores, scores(prod.artifact_path), primary=rm.primary_metric, tolerance=tolerance,
                          seed=seed)
    reg.record_gate(app_name, model, version, gate)
    return _decide(reg, result, version, prod, gate, f"{len(new)} new events", by)


def _sources_text(labels: LabelSet) -> str:
    return ", ".join(f"{n} {s}" for s, n in labels.sources().items())


def _bootstrap(reg: Any, app: str, model: str, rm: RetrainableModel, home: Path, base: LabelSet,
               recipe: Mapping[str, Any], eval_texts: list[str], eval_labels: list[str], split: str, out: Path,
               by: str | None) -> Any:
    """Register the app's current model (or one trained on the base data alone) as production v1."""
    current = getattr(rm, "current_artifact", None)
    artifact = current(home) if callable(current) else None
    origin = "current"
    if artifact is None or not Path(artifact).exists():
        resolved = base.resolved()
        if not len(resolved):
            raise DataError(f"{app}/{model} has no production version and no base data to train a first one on")
        artifact, origin = rm.train(dict(recipe), resolved.texts, resolved.labels, out), "base_data"
    metrics = _metrics(eval_labels, _predict(rm, Path(artifact), eval_texts))
    data = {"labels_until": None, "examples": len(base), "feedback_labels": 0, "new_labels": 0,
            "sources": base.sources(), "origin": origin}
    v = reg.register(app, model, artifact, data_fingerprint=base.resolved().fingerprint(),
                     recipe={**recipe, TRAINING_DATA_KEY: data}, metrics=metrics, eval_split=split, created_by=by)
    return reg.promote(app, model, v, by=by, reason=f"first production version ({origin})")


__all__ = ["DEFAULT_TOLERANCE", "Label", "LabelSet", "RetrainResult", "RetrainableModel", "RetrainableRanker",
           "load_retrainable",
           "parse_time", "retrain", "text_key"]
