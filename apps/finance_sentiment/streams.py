"""Synthetic timestamped news streams with known injected bursts (demo replay and the alert bench)."""
from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from typing import Any, Sequence

from .entities import Watchlist


@dataclass
class Burst:
    """An injected episode: ``count`` items about ``ticker`` between ``start`` and ``end``."""

    ticker: str
    start: float
    end: float
    count: int
    direction: str = "negative"
    item_ids: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"ticker": self.ticker, "start": self.start, "end": self.end, "count": self.count,
                "direction": self.direction, "item_ids": self.item_ids}


def retarget(text: str, watchlist: Watchlist, ticker: str) -> str:
    """Replace any watched company's name/alias in ``text`` with ``ticker``'s name (for synthetic bursts)."""
    entry = watchlist.get(ticker)
    assert entry is not None
    names = sorted({n for e in watchlist.entries for n in [e.name, *e.aliases]}, key=len, reverse=True)
    pattern = re.compile(r"\b(" + "|".join(re.escape(n) for n in names) + r")\b", re.I)
    out, n = pattern.subn("\x00", text, count=1)
    if not n:
        return f"{entry.name}: {text}"
    # other companies' names are dropped first; only then the target's name goes in (dropping after
    # inserting used to delete the target's name too, leaving bursts no watchlist entity could match)
    out = pattern.sub("", out).replace("\x00", entry.name)
    return re.sub(r"\s{2,}", " ", out).strip()


def build_stream(background: Sequence[dict[str, Any]], bursts_pool: Sequence[str], watchlist: Watchlist, *,
                 start: float, hours: float = 48.0, n_bursts: int = 2, burst_size: int = 6, burst_minutes: float = 30.0,
                 seed: int = 7, tickers: Sequence[str] | None = None, source: str = "replay") -> tuple[list[dict[str, Any]], list[Burst]]:
    """Spread ``background`` records (dicts with ``title``) uniformly at random over ``hours`` and inject
    ``n_bursts`` bursts of ``burst_size`` negative texts from ``bursts_pool``, each about one ticker and
    within ``burst_minutes``. Returns records sorted by time (with ``id``/``published_at``) and the bursts."""
    rng = random.Random(seed)
    span = hours * 3600.0
    recs = []
    for i, b in enumerate(background):
        recs.append({**b, "id": b.get("id") or f"bg-{i}", "published_at": start + rng.random() * span, "source": b.get("source", source)})
    pool = list(bursts_pool)
    rng.shuffle(pool)
    tickers = list(tickers or watchlist.tickers)
    bursts: list[Burst] = []
    slot = span / max(n_bursts, 1)
    for k in range(n_bursts):
        ticker = tickers[k % len(tickers)]
        t0 = start + slot * k + slot * (0.3 + 0.4 * rng.random())
        burst = Burst(ticker, t0, t0 + burst_minutes * 60.0, burst_size)
        for j in range(burst_size):
            if not pool:
                break
            text = retarget(pool.pop(), watchlist, ticker)
            rid = f"burst-{k}-{j}"
            ts = t0 + (burst_minutes * 60.0) * (j / max(burst_size - 1, 1))
            recs.append({"id": rid, "title": text, "published_at": ts, "source": source, "url": f"https://news.example.com/{rid}"})
            burst.item_ids.append(rid)
        bursts.append(burst)
    recs.sort(key=lambda r: r["published_at"])
    return recs, bursts
