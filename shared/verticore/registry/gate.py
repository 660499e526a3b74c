"""The promotion gate: is a candidate model at least as good as production on the same fixed
evaluation split? Pure functions over per-example outcomes (no I/O, no models).

* primary-metric delta (accuracy or macro-F1, candidate minus production),
* exact McNemar test on the discordant pairs (two-sided binomial, p = 0.5),
* a seeded paired bootstrap confidence interval of the primary-metric difference,
* pass rule: ``delta >= -tolerance`` and every per-class floor met by the candidate.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import DataError

PRIMARY_METRICS = ("accuracy", "macro_f1")
FLOOR_METRICS = ("recall", "precision", "f1")


@dataclass(frozen=True)
class McNemar:
    """Discordant pairs and the exact two-sided p-value."""

    candidate_only: int  # examples only the candidate gets right
    production_only: int  # examples only production gets right
    p_value: float


@dataclass
class GateResult:
    """The comparison of a candidate with production, and whether it may be promoted."""

    passed: bool
    reason: str  # one line
    primary: str
    candidate: float
    production: float
    delta: float
    tolerance: float
    ci_low: float
    ci_high: float
    confidence: float
    n: int
    mcnemar: McNemar
    n_boot: int
    seed: int
    per_class: dict[str, dict[str, float]] = field(default_factory=dict)
    floor_metric: str = "recall"
    floors: dict[str, float] = field(default_factory=dict)
    floor_failures: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "GateResult":
        d = dict(data)
        d["mcnemar"] = McNemar(**d["mcnemar"])
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})


def _bool_vector(x: Sequence[Any], what: str) -> np.ndarray:
    a = np.asarray(list(x))
    if a.ndim != 1:
        raise DataError(f"{what} must be a flat sequence of per-example outcomes")
    if a.size and not np.isin(a, [0, 1, True, False]).all():
        raise DataError(f"{what} must hold only 0/1 or True/False per example")
    return a.astype(bool)


def _check_pair(cand: np.ndarray, prod: np.ndarray) -> None:
    if cand.size == 0 or prod.size == 0:
        raise DataError("the evaluation split is empty: nothing to compare the candidate with production on")
    if cand.size != prod.size:
        raise DataError(f"candidate has {cand.size} outcomes but production has {prod.size}; "
                        "both must be scored on the same fixed evaluation split")


def mcnemar_exact(candidate_correct: Sequence[Any], production_correct: Sequence[Any]) -> McNemar:
    """Exact McNemar test: under H0 each discordant pair favours either model with p = 0.5, so the
    two-sided p-value is ``min(1, 2 * BinomCDF(min(b, c); b + c, 0.5))`` (1.0 with no discordant pair)."""
    cand = _bool_vector(candidate_correct, "candidate outcomes")
    prod = _bool_vector(production_correct, "production outcomes")
    _check_pair(cand, prod)
    b = int(np.sum(cand & ~prod))
    c = int(np.sum(~cand & prod))
    return McNemar(candidate_only=b, production_only=c, p_value=_binom_two_sided(b, c))


def _binom_two_sided(b: int, c: int) -> float:
    """``min(1, 2 * P(X <= min(b, c)))`` for ``X ~ Bin(b + c, 1/2)``, in exact integer arithmetic
    (no scipy needed; Python's int / int division rounds the huge ratio correctly)."""
    n, m = b + c, min(b, c)
    if n == 0:
        return 1.0
    if n > 20000:  # big integers get slow: sum the terms in log space (relative error < 1e-7)
        k = np.arange(1, m + 1, dtype=np.float64)
        logs = np.concatenate([[0.0], np.cumsum(np.log(n - k + 1) - np.log(k))]) - n * math.log(2)
        top = logs.max()
        return float(min(1.0, 2 * math.exp(top) * np.exp(logs - top).sum()))
    term, total = 1, 1
    for k in range(1, m + 1):
        term = term * (n - k + 1) // k  # C(n, k), exact
        total += term
    return float(min(1.0, 2 * total / 2 ** n))


def _encode(y_true: Sequence[Any], preds: Sequence[Sequence[Any]],
            labels: Sequence[Any] | None) -> tuple[list[str], np.ndarray, list[np.ndarray]]:
    y = [str(v) for v in y_true]
    ps = [[str(v) for v in p] for p in preds]
    for p in ps:
        if len(p) != len(y):
            raise DataError(f"{len(y)} true labels but {len(p)} predictions; score both models on the same split")
    labs = [str(v) for v in labels] if labels is not None else sorted(set(y).union(*map(set, ps)))
    pos = {lab: i for i, lab in enumerate(labs)}
    for seq in [y, *ps]:
        unknown = sorted(set(seq) - set(pos))
        if unknown:
            raise DataError(f"label {unknown[0]!r} is not in labels {labs}")
    return labs, np.array([pos[v] for v in y], dtype=np.int64), [np.array([pos[v] for v in p], dtype=np.int64) for p in ps]


def _per_class(y: np.ndarray, p: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """precision, recall, f1 and support per class (zero divisions count as 0)."""
    tp = np.bincount(y[y == p], minlength=k).astype(float)
    n_pred = np.bincount(p, minlength=k).astype(float)
    n_true = np.bincount(y, minlength=k).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        prec = np.where(n_pred > 0, tp / n_pred, 0.0)
        rec = np.where(n_true > 0, tp / n_true, 0.0)
        f1 = np.where(n_pred + n_true > 0, 2 * tp / (n_pred + n_true), 0.0)
    return prec, rec, f1, n_true


def macro_f1_resamples(y: np.ndarray, p: np.ndarray, idx: np.ndarray, k: int, *,
                       skip_absent: bool = False) -> np.ndarray:
    """Macro-F1 of every bootstrap resample at once: row ``r`` scores ``p[idx[r]]`` against
    ``y[idx[r]]``, both label indices below ``k``. A label absent from a resample's truth and
    predictions scores 0 (the gate's convention), or with ``skip_absent`` is left out of the mean
    (sklearn's, as the benches' point figures are computed)."""
    b = idx.shape[0]
    ys, ps = y[idx], p[idx]
    offs = (np.arange(b) * k)[:, None]
    size = b * k
    tp = np.bincount((ys + offs)[ys == ps], minlength=size).reshape(b, k)
    n_pred = np.bincount((ps + offs).ravel(), minlength=size).reshape(b, k)
    n_true = np.bincount((ys + offs).ravel(), minlength=size).reshape(b, k)
    denom = n_pred + n_true
    with np.errstate(divide="ignore", invalid="ignore"):
        f1 = np.where(denom > 0, 2 * tp / denom, 0.0)
    if skip_absent:
        return f1.sum(axis=1) / np.maximum((denom > 0).sum(axis=1), 1)
    return f1.mean(axis=1)


def paired_bootstrap_ci(candidate_correct: Sequence[Any] | None = None, production_correct: Sequence[Any] | None = None,
                        *, metric: str = "accuracy", y_true: Sequence[Any] | None = None,
                        candidate_pred: Sequence[Any] | None = None, production_pred: Sequence[Any] | None = None,
                        labels: Sequence[Any] | None = None, n_boot: int = 1000, confidence: float = 0.95,
                        seed: int = 0) -> tuple[float, float]:
    """Percentile CI of ``metric(candidate) - metric(production)`` over paired resamples of the
    evaluation split (the same examples drawn for both models). Deterministic for a given ``seed``.

    ``accuracy`` needs the correctness vectors; ``macro_f1`` needs ``y_true`` and both predictions.
    """
    if not 0 < confidence < 1:
        raise DataError(f"confidence must be between 0 and 1, got {confidence}")
    if n_boot < 1:
        raise DataError(f"n_boot must be at least 1, got {n_boot}")
    rng = np.random.default_rng(seed)
    alpha = (1 - confidence) / 2
    if metric == "accuracy":
        if candidate_correct is None or production_correct is None:
            raise DataError("accuracy bootstrap needs both correctness vectors")
        cand = _bool_vector(candidate_correct, "candidate outcomes")
        prod = _bool_vector(production_correct, "production outcomes")
        _check_pair(cand, prod)
        diff = cand.astype(float) - prod.astype(float)
        deltas = np.concatenate([diff[rng.integers(0, diff.size, size=(min(n_boot - s, 256), diff.size))].mean(axis=1)
                                 for s in range(0, n_boot, 256)])
    elif metric == "macro_f1":
        if y_true is None or candidate_pred is None or production_pred is None:
            raise DataError("macro_f1 bootstrap needs y_true and both models' predictions")
        if len(y_true) == 0:
            raise DataError("the evaluation split is empty: nothing to compare the candidate with production on")
        labs, y, (pc, pp) = _encode(y_true, [candidate_pred, production_pred], labels)
        k, n, parts = len(labs), y.size, []
        for s in range(0, n_boot, 256):
            idx = rng.integers(0, n, size=(min(n_boot - s, 256), n))
            parts.append(macro_f1_resamples(y, pc, idx, k) - macro_f1_resamples(y, pp, idx, k))
        deltas = np.concatenate(parts)
    else:
        raise DataError(f"unknown primary metric {metric!r}; use one of {', '.join(PRIMARY_METRICS)}")
    return float(np.quantile(deltas, alpha)), float(np.quantile(deltas, 1 - alpha))


def _floors_for(floors: float | Mapping[str, float] | None, labels: Sequence[str]) -> dict[str, float]:
    if floors is None:
        return {}
    if isinstance(floors, (int, float)):
        return {lab: float(floors) for lab in labels}
    out = {}
    default = floors.get("*")
    for lab in labels:
        if lab in floors:
            out[lab] = float(floors[lab])
        elif default is not None:
            out[lab] = float(default)
    unknown = sorted(set(map(str, floors)) - set(labels) - {"*"})
    if unknown:
        raise DataError(f"per-class floor for {unknown[0]!r}, a class absent from the evaluation split "
                        f"(classes: {', '.join(labels)})")
    return out


def _fmt(x: float) -> str:
    return f"{x:+.4f}" if x else "+0"


def compare(y_true: Sequence[Any], candidate_pred: Sequence[Any], production_pred: Sequence[Any], *,
            primary: str = "accuracy", tolerance: float = 0.0,
            floors: float | Mapping[str, float] | None = None, floor_metric: str = "recall",
            labels: Sequence[Any] | None = None, n_boot: int = 1000, confidence: float = 0.95,
            seed: int = 0) -> GateResult:
    """Gate a candidate against production from both models' predictions on the same split.

    Passes when ``primary(candidate) - primary(production) >= -tolerance`` and, for every class
    with a floor (``floors``: one number for all classes or ``{label: min, "*": default}``),
    the candidate's per-class ``floor_metric`` is at least the floor.
    """
    if primary not in PRIMARY_METRICS:
        raise DataError(f"unknown primary metric {primary!r}; use one of {', '.join(PRIMARY_METRICS)}")
    if floor_metric not in FLOOR_METRICS:
        raise DataError(f"unknown floor metric {floor_metric!r}; use one of {', '.join(FLOOR_METRICS)}")
    if tolerance < 0 or not math.isfinite(tolerance):
        raise DataError(f"tolerance must be a finite number >= 0, got {tolerance}")
    if len(y_true) == 0:
        raise DataError("the evaluation split is empty: nothing to compare the candidate with production on")
    labs, y, (pc, pp) = _encode(y_true, [candidate_pred, production_pred], labels)
    k = len(labs)
    cand_ok, prod_ok = pc == y, pp == y
    c_prec, c_rec, c_f1, support = _per_class(y, pc, k)
    p_f1 = _per_class(y, pp, k)[2]
    if primary == "accuracy":
        cand_v, prod_v = float(cand_ok.mean()), float(prod_ok.mean())
    else:
        cand_v, prod_v = float(c_f1.mean()), float(p_f1.mean())
    lo, hi = paired_bootstrap_ci(cand_ok, prod_ok, metric=primary, y_true=[labs[i] for i in y],
                                 candidate_pred=[labs[i] for i in pc], production_pred=[labs[i] for i in pp],
                                 labels=labs, n_boot=n_boot, confidence=confidence, seed=seed)
    per_class = {lab: {"precision": float(c_prec[i]), "recall": float(c_rec[i]), "f1": float(c_f1[i]),
                       "support": int(support[i])} for i, lab in enumerate(labs)}
    present = [lab for lab in labs if per_class[lab]["support"] > 0]
    floor_map = _floors_for(floors, present)
    failures = [f"class {lab!r} {floor_metric} {per_class[lab][floor_metric]:.4f} < floor {fl:.4f}"
                for lab, fl in floor_map.items() if per_class[lab][floor_metric] < fl - 1e-12]
    return _result(primary, cand_v, prod_v, tolerance, lo, hi, confidence, int(y.size),
                   mcnemar_exact(cand_ok, prod_ok), n_boot, seed, per_class, floor_metric, floor_map, failures)


def compare_correctness(candidate_correct: Sequence[Any], production_correct: Sequence[Any], *,
                        tolerance: float = 0.0, y_true: Sequence[Any] | None = None,
                        floors: float | Mapping[str, float] | None = None, n_boot: int = 1000,
                        confidence: float = 0.95, seed: int = 0) -> GateResult:
    """Gate on accuracy from per-example correctness vectors alone. Per-class floors (on recall,
    the only per-class metric correctness gives) need ``y_true``."""
    if tolerance < 0 or not math.isfinite(tolerance):
        raise DataError(f"tolerance must be a finite number >= 0, got {tolerance}")
    cand = _bool_vector(candidate_correct, "candidate outcomes")
    prod = _bool_vector(production_correct, "production outcomes")
    _check_pair(cand, prod)
    per_class: dict[str, dict[str, float]] = {}
    floor_map: dict[str, float] = {}
    failures: list[str] = []
    if floors is not None and y_true is None:
        raise DataError("per-class floors need y_true (the class of every example)")
    if y_true is not None:
        if len(y_true) != cand.size:
            raise DataError(f"{len(y_true)} true labels but {cand.size} outcomes")
        ys = np.array([str(v) for v in y_true])
        for lab in sorted(set(ys.tolist())):
            m = ys == lab
            per_class[lab] = {"recall": float(cand[m].mean()), "support": int(m.sum())}
        floor_map = _floors_for(floors, list(per_class))
        failures = [f"class {lab!r} recall {per_class[lab]['recall']:.4f} < floor {fl:.4f}"
                    for lab, fl in floor_map.items() if per_class[lab]["recall"] < fl - 1e-12]
    lo, hi = paired_bootstrap_ci(cand, prod, n_boot=n_boot, confidence=confidence, seed=seed)
    return _result("accuracy", float(cand.mean()), float(prod.mean()), tolerance, lo, hi, confidence, int(cand.size),
                   mcnemar_exact(cand, prod), n_boot, seed, per_class, "recall", floor_map, failures)


def compare_scores(candidate_scores: Sequence[float], production_scores: Sequence[float], *, primary: str,
                   tolerance: float = 0.0, n_boot: int = 1000, confidence: float = 0.95, seed: int = 0) -> GateResult:
    """Gate a ranker on per-example scores (e.g. each evaluation user's NDCG@10, both models on the
    same users in the same order): the primary value is their mean, the CI a paired bootstrap of the
    mean difference, and McNemar runs on hits (score > 0: the user got at least one relevant item)."""
    if tolerance < 0 or not math.isfinite(tolerance):
        raise DataError(f"tolerance must be a finite number >= 0, got {tolerance}")
    cand = np.asarray(list(candidate_scores), dtype=np.float64)
    prod = np.asarray(list(production_scores), dtype=np.float64)
    _check_pair(cand, prod)
    if not (np.isfinite(cand).all() and np.isfinite(prod).all()):
        raise DataError("per-example scores must be finite numbers")
    if not 0 < confidence < 1:
        raise DataError(f"confidence must be between 0 and 1, got {confidence}")
    if n_boot < 1:
        raise DataError(f"n_boot must be at least 1, got {n_boot}")
    rng = np.random.default_rng(seed)
    diff = cand - prod
    deltas = np.concatenate([diff[rng.integers(0, diff.size, size=(min(n_boot - s, 256), diff.size))].mean(axis=1)
                             for s in range(0, n_boot, 256)])
    alpha = (1 - confidence) / 2
    lo, hi = float(np.quantile(deltas, alpha)), float(np.quantile(deltas, 1 - alpha))
    return _result(str(primary), float(cand.mean()), float(prod.mean()), tolerance, lo, hi, confidence,
                   int(cand.size), mcnemar_exact(cand > 0, prod > 0), n_boot, seed, {}, "recall", {}, [])


def _result(primary: str, cand_v: float, prod_v: float, tolerance: float, lo: float, hi: float, confidence: float,
            n: int, mc: McNemar, n_boot: int, seed: int, per_class: dict, floor_metric: str,
            floor_map: dict[str, float], failures: list[str]) -> GateResult:
    delta = cand_v - prod_v
    stats = (f"{primary} {cand_v:.4f} vs production {prod_v:.4f} (delta {_fmt(delta)}, "
             f"{confidence:.0%} CI [{lo:+.4f}, {hi:+.4f}], McNemar p={mc.p_value:.3g}, n={n})")
    worse = delta < -tolerance - 1e-12
    problems = [f"{stats} is worse than production by more than the tolerance {tolerance:g}"] if worse else []
    problems += failures
    passed = not problems
    if passed:
        reason = f"gate passed: {stats}"
    else:
        reason = "gate failed: " + "; ".join(problems) + ("" if worse else f"; {stats}")
    return GateResult(passed=passed, reason=reason, primary=primary, candidate=cand_v, production=prod_v, delta=delta,
                      tolerance=tolerance, ci_low=lo, ci_high=hi, confidence=confidence, n=n, mcnemar=mc,
                      n_boot=n_boot, seed=seed, per_class=per_class, floor_metric=floor_metric, floors=floor_map,
                      floor_failures=failures)
