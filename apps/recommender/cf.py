"""Collaborative baselines: popularity and EASE (closed-form linear autoencoder, Steck 2019)."""
from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from verticore.errors import ArtifactError, DataError
from verticore.inference.component import COMPONENT_FILE, Component, register_component
from verticore.io import atomic_write_bytes, atomic_write_json, next_generation, read_json

from .interactions import Interactions

_WEIGHTS_RE = re.compile(r"^ease\.(\d+)\.safetensors$")


def _histories(model: Any, users: Sequence[Any], histories: Mapping[Any, Iterable[str]] | None) -> dict[Any, list[str]]:
    """Each user's items: from ``histories`` when given, else the interactions the model was fitted on."""
    if histories is not None:
        return {u: [str(i) for i in histories.get(u, ())] for u in users}
    inter = getattr(model, "_fitted_on", None)
    if inter is None:
        raise DataError(f"{type(model).__name__} has no fitted interactions; pass histories={{user: items}}")
    return {u: sorted(inter.seen(u)) if inter.has_user(u) else [] for u in users}


@register_component("recommender.Popularity")
class Popularity(Component):
    """Scores items by how many users interacted with them (optionally time-decayed).

    Implements :class:`verticore.evaluation.RankingModel` (``recommend_batch``). Its only
    setting is ``half_life_days`` (``to_dict``/``save``); the counts come from :meth:`fit`.
    """

    def __init__(self, half_life_days: float | None = None) -> None:
        self.half_life_days = None if half_life_days is None else float(half_life_days)
        self.counts: dict[str, float] = {}
        self._fitted_on: Interactions | None = None

    def _init_parameters(self) -> dict[str, Any]:
        return {"half_life_days": self.half_life_days}

    @classmethod
    def load(cls, directory: str | Path, **overrides: Any) -> "Popularity":
        """The settings :meth:`save` wrote to ``directory`` (an unfitted model)."""
        if not (Path(directory) / COMPONENT_FILE).exists():
            raise ArtifactError(f"no popularity model config in {directory} ({COMPONENT_FILE} missing)")
        return super().load(directory, **overrides)

    def fit(self, interactions: Interactions) -> "Popularity":
        if len(interactions) == 0:
            raise DataError("cannot fit popularity on zero interactions")
        self.counts = interactions.counts(self.half_life_days)
        self._ranked = sorted(self.counts, key=lambda i: -self.counts[i])
        self._fitted_on = interactions
        return self

    def recommend_batch(self, users: Sequence[Any], k: int = 10,
                        histories: Mapping[Any, Iterable[str]] | None = None) -> dict[Any, list[str]]:
        """Top-``k`` popular items per user, leaving out what each user already saw."""
        seen = _histories(self, users, histories)
        return {u: [i for i, _ in self.recommend(k, exclude=seen[u])] for u in users}

    def recommend(self, k: int = 10, exclude: Iterable[str] = (), candidates: Iterable[str] | None = None) -> list[tuple[str, float]]:
        """Top-``k`` popular items not in ``exclude`` (and within ``candidates`` if given)."""
        excl = set(exclude)
        cand = set(candidates) if candidates is not None else None
        out = []
        for i in self._ranked:
            if i in excl or (cand is not None and i not in cand):
                continue
            out.append((i, self.counts[i]))
            if len(out) >= k:
                break
        return out


@register_component("recommender.EASE")
class EASE(Component):
    """EASE^R item-item model: ``B = I - P / diag(P)`` with ``P = (X^T X + lambda I)^-1``.

    Closed form, one matrix inverse over the items seen in training (fine at 10k items).
    Items never seen in training are *cold*: EASE cannot score them (:meth:`knows`).
    Implements :class:`verticore.evaluation.RankingModel` (``recommend_batch``).

    Settings (``l2``, ``implicit``) round-trip through ``to_dict``/``from_dict``; :meth:`save`
    writes the fitted state (item list + weights) with those settings in ``ease.json``.
    """

    def __init__(self, l2: float = 200.0, implicit: bool = True) -> None:
        self.l2 = float(l2)
        self.implicit = bool(implicit)
        self.items: list[str] = []
        self.index: dict[str, int] = {}
        self.B: np.ndarray | None = None
        self._fitted_on: Interactions | None = None

    def fit(self, interactions: Interactions, show_progress: bool = False) -> "EASE":
        """Fit on ``interactions`` (implicit: every interaction counts 1)."""
        df = interactions.df
        if df.empty:
            raise DataError("cannot fit EASE on zero interactions")
        self.items = sorted(set(df["item"]), key=_natural)
        self.index = {it: j for j, it in enumerate(self.items)}
        users = {u: r for r, u in enumerate(dict.fromkeys(df["user"]))}
        X = np.zeros((len(users), len(self.items)), dtype=np.float32)
        vals = np.ones(len(df), dtype=np.float32) if self.implicit else df["weight"].to_numpy(np.float32)
        np.maximum.at(X, (df["user"].map(users).to_numpy(), df["item"].map(self.index).to_numpy()), vals)
        G = (X.T @ X).astype(np.float64)
        G[np.diag_indices_from(G)] += self.l2
        P = np.linalg.inv(G)
        B = -P / np.diag(P)[None, :]
        B[np.diag_indices_from(B)] = 0.0
        self.B = B.astype(np.float32)
        self._fitted_on = interactions
        return self

    def knows(self, item: str) -> bool:
        return item in self.index

    def user_vector(self, history: Iterable[str]) -> np.ndarray:
        x = np.zeros(len(self.items), dtype=np.float32)
        for it in history:
            j = self.index.get(str(it))
            if j is not None:
                x[j] = 1.0
        return x

    def scores(self, history: Iterable[str]) -> np.ndarray:
        """Scores over :attr:`items` for a user with this history (unknown items are ignored)."""
        if self.B is None:
            raise ArtifactError("EASE model is not fitted")
        return self.user_vector(history) @ self.B

    def scores_for(self, history: Iterable[str], items: Sequence[str]) -> np.ndarray:
        """Scores for ``items``; NaN where the item is cold (unknown to the model)."""
        s = self.scores(history)
        return np.array([s[self.index[i]] if i in self.index else np.nan for i in items], dtype=np.float64)

    def recommend(self, history: Iterable[str], k: int = 10, exclude: Iterable[str] = ()) -> list[tuple[str, float]]:
        hist = list(history)
        s = self.scores(hist).astype(np.float64)
        for it in set(exclude) | set(hist):
            j = self.index.get(str(it))
            if j is not None:
                s[j] = -np.inf
        top = np.argsort(-s, kind="stable")[:k]
        return [(self.items[j], float(s[j])) for j in top if np.isfinite(s[j])]

    def recommend_batch(self, users: Sequence[Any], k: int = 10,
                        histories: Mapping[Any, Iterable[str]] | None = None) -> dict[Any, list[str]]:
        """Top-``k`` unseen items per user from their history (fitted interactions unless ``histories``)."""
        hist = _histories(self, users, histories)
        return {u: [i for i, _ in self.recommend(h, k)] if h else [] for u, h in hist.items()}

    def _init_parameters(self) -> dict[str, Any]:
        return {"l2": self.l2, "implicit": self.implicit}

    # -- persistence (safetensors + JSON, never pickle) -------------------------------------
    def save(self, directory: str | Path) -> Path:
        """Write the fitted model: ``ease.json`` (settings as ``component``, items, checksum) and the
        weights; an unfitted model writes its settings only (``component.json``). Returns ``ease.json``
        or ``component.json``."""
        from safetensors.numpy import save

        if self.B is None:
            return super().save(directory)
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        # weights go to a new generation file first and ease.json (the commit point) names it, so a
        # crash in between leaves the old item list with the old matrix, never a misaligned pair
        name = f"ease.{next_generation(d, _WEIGHTS_RE)}.safetensors"
        data = save({"B": self.B})
        atomic_write_bytes(d / name, data)
        # l2/implicit stay at the top level too, so an older reader still opens the file
        atomic_write_json(d / "ease.json", {"format": "verticore-ease/1", "component": self.to_dict(),
                                            "l2": self.l2, "implicit": self.implicit,
                                            "items": self.items, "weights_file": name,
                                            "weights_sha256": hashlib.sha256(data).hexdigest()})
        for f in d.iterdir():  # superseded generations, the pre-generation file, orphans of crashed saves
            if f.name != name and (_WEIGHTS_RE.match(f.name) or f.name == "ease.safetensors"):
                try:
                    f.unlink()
                except OSError:  # pragma: no cover - removed by the next save
                    pass
        return d / "ease.json"

    @classmethod
    def load(cls, directory: str | Path, **overrides: Any) -> "EASE":
        """Open what :meth:`save` wrote (fitted), or an unfitted model from a ``component.json`` config."""
        from safetensors.numpy import load

        d = Path(directory)
        if not (d / "ease.json").exists():
            if (d / COMPONENT_FILE).exists():
                return super().load(d, **overrides)
            raise ArtifactError(f"no EASE model in {d}")
        try:
            meta = read_json(d / "ease.json", "EASE config")
            name = str(meta.get("weights_file") or "ease.safetensors")  # older saves: one fixed name
            if name != "ease.safetensors" and not _WEIGHTS_RE.match(name):
                raise ValueError(f"unexpected weights file {name!r}")
            raw = (d / name).read_bytes()
            if meta.get("weights_sha256") and hashlib.sha256(raw).hexdigest() != meta["weights_sha256"]:
                raise ValueError(f"{name} checksum mismatch")
            B = load(raw)["B"]
        except Exception as exc:
            raise ArtifactError(f"EASE model in {d} is corrupt: {str(exc).splitlines()[0]}") from None
        stored = meta.get("component")
        if isinstance(stored, dict):  # the settings as a component dict; older saves: top-level keys
            m = cls.from_dict(stored, **overrides)
        else:
            m = cls(**{"l2": meta["l2"], "implicit": meta.get("implicit", True), **overrides})
        m.items = list(meta["items"])
        m.index = {it: j for j, it in enumerate(m.items)}
        if B.shape != (len(m.items), len(m.items)):
            raise ArtifactError(f"EASE model in {d} is inconsistent: {B.shape} matrix for {len(m.items)} items")
        m.B = B
        return m


def _natural(x: Any) -> tuple:
    s = str(x)
    return (0, int(s), s) if s.isdigit() else (1, 0, s)
