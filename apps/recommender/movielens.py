"""Loading MovieLens-format data (movies.csv, tags.csv, splits/) into catalog records and interactions."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pandas as pd

from verticore.errors import DataError
from verticore.io import read_table

from .interactions import Interactions

MOVIELENS_TEMPLATE = "{title}. Year: {year}. Genres: {genres}. Tags: {tags}"
_YEAR = re.compile(r"\((\d{4})\)\s*$")


def movie_records(data_dir: str | Path, max_tags: int = 12) -> list[dict[str, Any]]:
    """One record per movie: ``item_id``, ``title``, ``year``, ``genres`` (list), ``tags`` (list).

    Tags are the user tags from ``tags.csv``, most frequent first, at most ``max_tags`` per movie.
    """
    d = Path(data_dir)
    movies = read_table(d / "movies.csv", ["movieId", "title", "genres"])
    tags_path = d / "tags.csv"
    tag_map: dict[str, list[str]] = {}
    if tags_path.exists():
        tags = read_table(tags_path, ["movieId", "tag"], allow_empty=True)  # optional: may have no rows
        tags["tag_norm"] = tags["tag"].str.strip().str.lower()
        tags = tags[tags["tag_norm"] != ""]
        counts = tags.groupby(["movieId", "tag_norm"]).size().reset_index(name="n")
        counts = counts.sort_values(["movieId", "n", "tag_norm"], ascending=[True, False, True])
        for mid, g in counts.groupby("movieId", sort=False):
            tag_map[str(mid)] = g["tag_norm"].tolist()[:max_tags]
    out = []
    for row in movies.itertuples(index=False):
        title = str(row.title).strip()
        m = _YEAR.search(title)
        genres = [] if row.genres in ("(no genres listed)", "") else str(row.genres).split("|")
        out.append({"item_id": str(row.movieId), "title": title, "year": m.group(1) if m else "",
                    "genres": genres, "genre": genres[0] if genres else "", "tags": tag_map.get(str(row.movieId), [])})
    return out


def load_splits(data_dir: str | Path) -> tuple[Interactions, pd.DataFrame, set[str]]:
    """``splits/train.csv`` as :class:`Interactions`, ``splits/test.csv`` as a frame, cold item ids."""
    s = Path(data_dir) / "splits"
    if not s.is_dir():
        raise DataError(f"no splits/ directory under {data_dir}")
    train = Interactions.from_file(s / "train.csv", user_col="userId", item_col="movieId")
    test = read_table(s / "test.csv", ["userId", "movieId"])
    test = test.rename(columns={"userId": "user", "movieId": "item"})[["user", "item"]]
    cold_path = s / "cold_items.csv"
    cold = set(read_table(cold_path, ["movieId"], allow_empty=True)["movieId"].astype(str)) \
        if cold_path.exists() else set()  # optional: may be missing or have no rows
    return train, test, cold
