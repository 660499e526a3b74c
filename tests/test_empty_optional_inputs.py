"""Optional inputs may be empty (a header and no rows); required ones are still refused clearly (issue 12)."""
from __future__ import annotations

import json

import pytest

from verticore.errors import DataError


def _movielens(tmp_path, tags: str | None, cold: str | None):
    d = tmp_path / "ml"
    (d / "splits").mkdir(parents=True)
    (d / "movies.csv").write_text("movieId,title,genres\n1,Toy Story (1995),Animation|Comedy\n2,Heat (1995),Action\n",
                                  encoding="utf-8")
    (d / "splits" / "train.csv").write_text("userId,movieId,rating,timestamp\n1,1,5,10\n1,2,4,20\n", encoding="utf-8")
    (d / "splits" / "test.csv").write_text("userId,movieId\n1,2\n", encoding="utf-8")
    if tags is not None:
        (d / "tags.csv").write_text(tags, encoding="utf-8")
    if cold is not None:
        (d / "splits" / "cold_items.csv").write_text(cold, encoding="utf-8")
    return d


@pytest.mark.parametrize("empty", ["userId,movieId,tag,timestamp\n", ""])
def test_movielens_accepts_an_empty_optional_tags_and_cold_items_file(tmp_path, empty):
    from recommender.movielens import load_splits, movie_records

    d = _movielens(tmp_path, tags=empty, cold="movieId\n" if empty else "")
    records = movie_records(d)
    assert [r["item_id"] for r in records] == ["1", "2"] and all(r["tags"] == [] for r in records)
    assert records[0]["genres"] == ["Animation", "Comedy"]
    train, test, cold = load_splits(d)
    assert len(train) == 2 and len(test) == 1 and cold == set()


def test_movielens_still_refuses_an_empty_required_file(tmp_path):
    from recommender.movielens import load_splits, movie_records

    d = _movielens(tmp_path, tags=None, cold=None)
    (d / "movies.csv").write_text("movieId,title,genres\n", encoding="utf-8")
    with pytest.raises(DataError, match="no rows"):
        movie_records(d)
    (d / "splits" / "test.csv").write_text("userId,movieId\n", encoding="utf-8")
    with pytest.raises(DataError, match="no rows"):
        load_splits(d)


def test_recommender_build_accepts_an_empty_optional_interactions_file(tmp_path, capsys):
    from recommender.cli import main

    items = tmp_path / "items.csv"
    items.write_text("item_id,title,description\na,Ghost Ship,ghosts at sea\nb,Bunny Hop,a dancing rabbit\n",
                     encoding="utf-8")
    inter = tmp_path / "inter.csv"
    inter.write_text("user,item,rating,timestamp\n", encoding="utf-8")
    try:
        main(["build", "--items", str(items), "--interactions", str(inter), "--state", str(tmp_path / "s")])
    except SystemExit as exc:
        assert exc.code in (0, None)
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["interactions"] == 0 and out["mode"] == "text" and out["items"] == 2
